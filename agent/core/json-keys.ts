/**
 * Duplicate keys in JSON text. `JSON.parse` keeps the last of two equal keys
 * in one object, other parsers (jq's `first`, Python's object_pairs_hook, an
 * administrator's eye) may see the first: a manifest or descriptor with
 * `"sha256"` twice reads as two different images to two tools. Such a
 * document is refused rather than read one way.
 *
 * Runs on text JSON.parse has already accepted, so only strings and the
 * brackets matter: a string followed by `:` is a key of the innermost open
 * object.
 */

/** Strings (with escapes) and brackets; everything else in valid JSON is numbers, literals, commas, colons and space. */
const TOKEN = /"(?:[^"\\]|\\.)*"|[{}[\]]/g
const SPACE = /[ \t\n\r]*/y

interface Frame {
  /** Keys seen so far when the frame is an object; undefined for an array. */
  keys: Set<string> | undefined
  /** JSON path of the frame (`$`, `$.a`, `$.a[]`). */
  path: string
}

/** The first duplicated key of `text` (valid JSON) as `{ key, path }` of its object, or undefined. */
export const firstDuplicateKey = (text: string): { key: string; path: string } | undefined => {
  const stack: Frame[] = []
  let lastKey: string | undefined
  TOKEN.lastIndex = 0
  for (let m = TOKEN.exec(text); m; m = TOKEN.exec(text)) {
    const tok = m[0]
    const top = stack[stack.length - 1]
    if (tok === '{' || tok === '[') {
      const path = !top ? '$' : top.keys ? `${top.path}.${lastKey ?? '?'}` : `${top.path}[]`
      stack.push({ keys: tok === '{' ? new Set() : undefined, path })
    } else if (tok === '}' || tok === ']') {
      stack.pop()
    } else {
      SPACE.lastIndex = TOKEN.lastIndex
      SPACE.exec(text)
      if (text[SPACE.lastIndex] !== ':' || !top?.keys) continue
      const key = JSON.parse(tok) as string
      if (top.keys.has(key)) return { key, path: top.path }
      top.keys.add(key)
      lastKey = key
    }
  }
  return undefined
}
