// Stands in for web-streams-polyfill in the bundle (scripts/bundle-lib.mjs):
// fetch-blob loads it only when node:stream/web is missing (Node < 16.5).
throw new Error('boot-agent: web-streams-polyfill is left out of the bundle; Node.js >= 20 has node:stream/web')
