// GitHub's own cache client (@actions/cache) against whatever service the environment
// names, so the tests can hold the loopback double to the real client's expectations.
//
//   node client.js save    '{"paths": ["data"], "key": "k"}'
//   node client.js restore '{"paths": ["data"], "key": "k", "restoreKeys": ["k-"]}'
//
// Paths are relative to GITHUB_WORKSPACE (else the working directory), as in a job.
// The client logs to stdout as in a job (::warning:: lines and plain info lines); the
// last line is "RESULT " and a JSON document: the call's return value (save: the
// cache id, -1 when it saved nothing; restore: the matched key, null on a miss), or
// what it threw, and the seconds it took. The exit code is 0 either way, 2 on misuse.
'use strict'

const cache = require('@actions/cache')

async function main() {
  const [mode, argument] = process.argv.slice(2)
  const request = JSON.parse(argument || '{}')
  if (!['save', 'restore'].includes(mode) || !Array.isArray(request.paths)) {
    console.error('usage: node client.js save|restore \'{"paths": [...], "key": "..."}\'')
    return 2
  }
  const started = Date.now()
  const outcome = {mode}
  try {
    if (mode === 'save') {
      outcome.returned = await cache.saveCache(request.paths, request.key)
    } else {
      const matched = await cache.restoreCache(
        request.paths,
        request.key,
        request.restoreKeys || []
      )
      outcome.returned = matched === undefined ? null : matched
    }
  } catch (error) {
    outcome.threw = {name: error.name, message: error.message}
  }
  outcome.seconds = (Date.now() - started) / 1000
  console.log(`RESULT ${JSON.stringify(outcome)}`)
  return 0
}

main().then(code => {
  process.exitCode = code
})
