import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { rm } from 'node:fs/promises'
import { HttpProblem } from '../../agent/head/http-util.js'
import { sendImage, sendManifest } from '../../agent/head/image-answers.js'
import { ImageStore } from '../../agent/head/store.js'
import { imageBytes, publishBytes } from '../helpers/head-fixtures.js'

/** A real loopback server running `handle`; a thrown HttpProblem becomes its status and code. */
const serve = async (t: Test, handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>): Promise<string> => {
  const server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      const p = e instanceof HttpProblem ? e : undefined
      res.writeHead(p?.status ?? 500, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ code: p?.code ?? 'E', message: (e as Error).message }))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

const published = async (t: Test, mirrors?: string[]) => {
  const dir = t.testdir()
  const store = new ImageStore(join(dir, 'store'))
  const bytes = imageBytes(70_000, 9)
  const r = await publishBytes(store.dir, 'img', bytes, { dir, ...(mirrors ? { mirrors } : {}) })
  return { store, bytes, sha: r.sha256 }
}

t.test('a manifest is sent with its digest and length; HEAD sends the headers only and counts no bytes', async (t) => {
  const { store, sha } = await published(t)
  const sent: number[] = []
  const url = await serve(t, async (req, res) => void sent.push(await sendManifest(res, store, sha, 'img', req.method === 'HEAD')))
  const text = (await store.manifestText(sha))!
  const get = await fetch(url)
  t.equal(get.status, 200)
  t.equal(get.headers.get('x-image-sha256'), sha)
  t.equal(get.headers.get('content-length'), String(Buffer.byteLength(text)))
  t.equal(get.headers.get('cache-control'), 'no-cache')
  t.equal(await get.text(), text)
  const head = await fetch(url, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.headers.get('content-length'), String(Buffer.byteLength(text)))
  t.same(sent, [Buffer.byteLength(text), 0])
})

t.test('no digest, or no manifest for it, is 404 ENOIMAGE naming what was asked', async (t) => {
  const { store } = await published(t)
  let which: string | undefined
  const url = await serve(t, async (_req, res) => void (await sendManifest(res, store, which, 'image "gone"', false)))
  for (const sha of [undefined, 'e'.repeat(64)]) {
    which = sha
    const r = await fetch(url)
    t.equal(r.status, 404)
    t.match(await r.json(), { code: 'ENOIMAGE', message: 'no manifest for image "gone"' })
  }
})

t.test('with redirects on, a manifest with an http mirror answers 302 to it; without one, the bytes are served', async (t) => {
  const withMirror = await published(t, ['https://s3.example/b/img.sqfs'])
  const url = await serve(t, async (req, res) => sendImage(req, res, withMirror.store, withMirror.sha, { head: false, redirectToMirrors: true }))
  const r = await fetch(url, { redirect: 'manual' })
  t.equal(r.status, 302)
  t.equal(r.headers.get('location'), 'https://s3.example/b/img.sqfs')
  await r.arrayBuffer()
})

t.test('with redirects on but only the head\'s own endpoint in urls, the head serves the bytes itself', async (t) => {
  const { store, sha, bytes } = await published(t)
  const counted: number[] = []
  const url = await serve(t, async (req, res) => sendImage(req, res, store, sha, { head: false, redirectToMirrors: true, onBytes: (n) => counted.push(n) }))
  const r = await fetch(url, { redirect: 'manual' })
  t.equal(r.status, 200)
  t.ok(Buffer.from(await r.arrayBuffer()).equals(bytes))
  t.equal(counted.reduce((a, b) => a + b, 0), bytes.length, 'onBytes saw every byte sent')
})

t.test('an unknown digest is 404; a known digest whose file is gone is 404 pointing at the consistency view', async (t) => {
  const { store, sha } = await published(t)
  let which = 'e'.repeat(64)
  const url = await serve(t, async (req, res) => sendImage(req, res, store, which, { head: false }))
  const unknown = await fetch(url)
  t.equal(unknown.status, 404)
  t.match(await unknown.json(), { code: 'ENOIMAGE', message: /no image with digest/ })
  await rm(store.objectPath(sha))
  which = sha
  const lost = await fetch(url)
  t.equal(lost.status, 404)
  t.match(await lost.json(), { code: 'ENOIMAGE', message: /missing \(see GET \/v1\/consistency\)/ })
})
