// GitHub gives the cache service's variables to JavaScript actions only. This one
// hands them to the next ci-integration step in a file of its own (0600, in a 0700
// folder under RUNNER_TEMP), which that step reads and removes: never $GITHUB_ENV,
// where every later step, the build scripts under test among them, would read the
// token. No dependency: node's own fs, os and path.
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");

const NAMES = [
  "ACTIONS_CACHE_URL",
  "ACTIONS_RESULTS_URL",
  "ACTIONS_RUNTIME_TOKEN",
  "ACTIONS_CACHE_SERVICE_V2",
  "ACTIONS_CACHE_MODE",
];
const SECRETS = new Set(["ACTIONS_RUNTIME_TOKEN"]);
// The CLI takes only a file of this shape: FOLDER_PREFIX*/FILE_NAME.
const FOLDER_PREFIX = "ci-integration-cache-env-";
const FILE_NAME = "env.json";

function main(env) {
  if (!env.GITHUB_OUTPUT) {
    console.log("::error::GITHUB_OUTPUT is not set: run this as a step of a GitHub Actions job");
    return 1;
  }
  const handed = {};
  for (const name of NAMES) {
    const value = env[name];
    if (!value) continue;
    if (SECRETS.has(name)) console.log(`::add-mask::${value}`);
    handed[name] = value;
  }
  const folder = fs.mkdtempSync(path.join(env.RUNNER_TEMP || os.tmpdir(), FOLDER_PREFIX));
  const file = path.join(folder, FILE_NAME);
  fs.writeFileSync(file, JSON.stringify(handed), { mode: 0o600, flag: "wx" });
  const v2 = /^(true|1)$/i.test(env.ACTIONS_CACHE_SERVICE_V2 || "");
  const service = v2 ? "v2" : env.ACTIONS_CACHE_URL ? "v1" : "none";
  fs.appendFileSync(env.GITHUB_OUTPUT, `cache-service=${service}\nenv-file=${file}\n`);
  const names = Object.keys(handed).join(", ") || "nothing";
  console.log(`handed ${names} to the next ci-integration step; cache service: ${service}`);
  return 0;
}

process.exitCode = main(process.env);
