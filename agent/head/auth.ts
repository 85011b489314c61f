/**
 * The head's one authentication: a bearer token every request must carry,
 * when the head was given one (`--token`).
 */
import { createHash, timingSafeEqual } from 'node:crypto'
import { HttpProblem } from './http-util.js'

/** True when `given` is `want`, in time that does not depend on where they differ or on their lengths. */
export const sameToken = (given: string, want: string): boolean => {
  // Compare digests so the comparison takes the same time whatever the length.
  const a = createHash('sha256').update(given).digest()
  const b = createHash('sha256').update(want).digest()
  return timingSafeEqual(a, b)
}

/** Throws 401 EAUTH (with `WWW-Authenticate`) unless `authorization` is `Bearer <token>`. */
export const checkBearer = (authorization: string | undefined, token: string): void => {
  const m = /^Bearer\s+(\S+)$/i.exec(authorization ?? '')
  if (!m?.[1] || !sameToken(m[1], token)) {
    throw new HttpProblem(401, 'EAUTH', 'missing or wrong bearer token', { headers: { 'www-authenticate': 'Bearer realm="boot-agent"' } })
  }
}
