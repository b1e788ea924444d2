// GitHub gives the cache service's variables to JavaScript actions only. This one
// hands them to the job's later steps through GITHUB_ENV, the token masked first.
// No dependency: node's own fs and crypto.
"use strict";

const crypto = require("crypto");
const fs = require("fs");

const NAMES = [
  "ACTIONS_CACHE_URL",
  "ACTIONS_RESULTS_URL",
  "ACTIONS_RUNTIME_TOKEN",
  "ACTIONS_CACHE_SERVICE_V2",
  "ACTIONS_CACHE_MODE",
];
const SECRETS = new Set(["ACTIONS_RUNTIME_TOKEN"]);

function main(env) {
  if (!env.GITHUB_ENV) {
    console.log("::error::GITHUB_ENV is not set: run this as a step of a GitHub Actions job");
    return 1;
  }
  const exported = [];
  let lines = "";
  for (const name of NAMES) {
    const value = env[name];
    if (!value) continue;
    if (SECRETS.has(name)) console.log(`::add-mask::${value}`);
    // The heredoc form, with a delimiter no value can contain.
    const delimiter = `ghadelimiter_${crypto.randomUUID()}`;
    lines += `${name}<<${delimiter}\n${value}\n${delimiter}\n`;
    exported.push(name);
  }
  fs.appendFileSync(env.GITHUB_ENV, lines);
  const v2 = /^(true|1)$/i.test(env.ACTIONS_CACHE_SERVICE_V2 || "");
  const service = v2 ? "v2" : env.ACTIONS_CACHE_URL ? "v1" : "none";
  if (env.GITHUB_OUTPUT) fs.appendFileSync(env.GITHUB_OUTPUT, `cache-service=${service}\n`);
  console.log(`exported ${exported.join(", ") || "nothing"}; cache service: ${service}`);
  return 0;
}

process.exitCode = main(process.env);
