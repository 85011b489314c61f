import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { open, writeFile } from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { HttpProblem, sendProblem } from '../../agent/head/http-util.js'
import { parseRange, sendFile } from '../../agent/head/range.js'
import { imageBytes } from '../helpers/head-fixtures.js'

t.test('parseRange reads one range against the file size, RFC 9110 §14', async (t) => {
  const cases: Array<[string | undefined, number, ReturnType<typeof parseRange>]> = [
    [undefined, 100, undefined],
    ['bytes=0-9', 100, { start: 0, end: 9 }],
    ['bytes=90-', 100, { start: 90, end: 99 }],
    ['bytes=90-500', 100, { start: 90, end: 99 }],
    ['bytes=-10', 100, { start: 90, end: 99 }],
    ['bytes=-500', 100, { start: 0, end: 99 }],
    [' bytes= 5 - 6 ', 100, { start: 5, end: 6 }],
    ['bytes=100-', 100, 'unsatisfiable'],
    ['bytes=-0', 100, 'unsatisfiable'],
    ['bytes=-5', 0, 'unsatisfiable'],
    ['bytes=99999999999999999999-', 100, 'unsatisfiable'],
    ['bytes=5-2', 100, undefined],
    ['bytes=0-1,5-6', 100, undefined],
    ['bytes=', 100, undefined],
    ['items=0-1', 100, undefined],
  ]
  for (const [header, size, want] of cases) t.same(parseRange(header, size), want, `${header} of ${size}`)
})

const FILE = imageBytes(300_000, 3)

/** A real server answering every request with `sendFile` of the file at `path`; notes each handle it opened. */
const serve = async (t: Test, path: string, opts: { head?: boolean } = {}): Promise<{ url: string; handles: FileHandle[]; sent: number[] }> => {
  const handles: FileHandle[] = []
  const sent: number[] = []
  const server = createServer((req, res) => {
    void (async () => {
      const fh = await open(path, 'r')
      handles.push(fh)
      await sendFile(req, res, fh, { head: req.method === 'HEAD' || Boolean(opts.head), onBytes: (n) => sent.push(n) }).catch((e: unknown) => {
        if (e instanceof HttpProblem) sendProblem(res, e)
        else res.destroy()
      })
    })()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, handles, sent }
}

t.test('sendFile serves a real file whole, one range with 206, and headers only for HEAD', async (t) => {
  const path = join(t.testdir(), 'image')
  await writeFile(path, FILE)
  const { url, handles, sent } = await serve(t, path)
  const whole = await fetch(url)
  t.same([whole.status, whole.headers.get('content-length'), whole.headers.get('accept-ranges'), whole.headers.get('content-range')], [200, String(FILE.length), 'bytes', null])
  t.ok(Buffer.from(await whole.arrayBuffer()).equals(FILE))
  t.equal(sent.reduce((a, b) => a + b, 0), FILE.length, 'every body byte counted')
  const part = await fetch(url, { headers: { range: 'bytes=1000-1999' } })
  t.same([part.status, part.headers.get('content-range'), part.headers.get('content-length')], [206, `bytes 1000-1999/${FILE.length}`, '1000'])
  t.ok(Buffer.from(await part.arrayBuffer()).equals(FILE.subarray(1000, 2000)))
  const head = await fetch(url, { method: 'HEAD', headers: { range: 'bytes=-10' } })
  t.same([head.status, head.headers.get('content-length'), head.headers.get('content-range')], [206, '10', `bytes ${FILE.length - 10}-${FILE.length - 1}/${FILE.length}`])
  t.ok(handles.every((h) => h.fd === -1), 'every handle was closed')
})

t.test('a range outside the file is 416 naming the size, sent before any byte', async (t) => {
  const path = join(t.testdir(), 'image')
  await writeFile(path, FILE)
  const { url, handles } = await serve(t, path)
  const out = await fetch(url, { headers: { range: `bytes=${FILE.length}-` } })
  t.equal(out.status, 416)
  t.equal(out.headers.get('content-range'), `bytes */${FILE.length}`)
  t.match(await out.json(), { error: { code: 'ERANGE', message: `range bytes=${FILE.length}- is outside the image's ${FILE.length} bytes` } })
  t.equal(handles[0]?.fd, -1, 'the handle was closed')
})

t.test('an empty file is 200 with no body', async (t) => {
  const path = join(t.testdir(), 'empty')
  await writeFile(path, '')
  const { url } = await serve(t, path)
  const res = await fetch(url)
  t.same([res.status, res.headers.get('content-length'), (await res.arrayBuffer()).byteLength], [200, '0', 0])
})
