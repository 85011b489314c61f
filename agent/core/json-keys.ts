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

interface Frame {
  /** Keys seen so far when the frame is an object; undefined for an array. */
  keys: Set<string> | undefined
  /** JSON path of the frame (`$`, `$.a`, `$.a[]`). */
  path: string
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const COLON = 0x3a

const isSpace = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d

/** Index just past the string literal opening at `start` (valid JSON: it is closed). */
const stringEnd = (text: string, start: number): number => {
  let j = start + 1
  for (;;) {
    j = text.indexOf('"', j)
    if (j < 0) return text.length
    let backslashes = 0
    for (let k = j - 1; text.charCodeAt(k) === BACKSLASH; k--) backslashes++
    if (backslashes % 2 === 0) return j + 1
    j++
  }
}

/**
 * The first duplicated key of `text` (valid JSON) as `{ key, path }` of its
 * object, or undefined. A plain scan (indexOf to each string's end), not a
 * regular expression: V8's backtracking overflowed its stack on a 50 MB
 * string value.
 */
export const firstDuplicateKey = (text: string): { key: string; path: string } | undefined => {
  const stack: Frame[] = []
  let lastKey: string | undefined
  const n = text.length
  let i = 0
  while (i < n) {
    const c = text.charCodeAt(i)
    if (c === QUOTE) {
      const end = stringEnd(text, i)
      let m = end
      while (m < n && isSpace(text.charCodeAt(m))) m++
      const top = stack[stack.length - 1]
      if (m < n && text.charCodeAt(m) === COLON && top?.keys) {
        const key = JSON.parse(text.slice(i, end)) as string
        if (top.keys.has(key)) return { key, path: top.path }
        top.keys.add(key)
        lastKey = key
      }
      i = end
      continue
    }
    if (c === 0x7b || c === 0x5b) {
      // { or [
      const top = stack[stack.length - 1]
      const path = !top ? '$' : top.keys ? `${top.path}.${lastKey ?? '?'}` : `${top.path}[]`
      stack.push({ keys: c === 0x7b ? new Set() : undefined, path })
    } else if (c === 0x7d || c === 0x5d) {
      // } or ]
      stack.pop()
    }
    i++
  }
  return undefined
}
