// GitHub's language service (@actions/languageservice, what the VS Code extension
// runs) on each file named on the command line: its diagnostics as one JSON object,
// path -> [{line, severity, message}]. The modules' folder is $LANGUAGESERVICE_MODULES.
// A step that uses OWNER/ci-integration/PATH@REF is checked against $ACTIONS_ROOT/PATH's
// action.yml (its inputs, required or not), as GitHub checks a published action's.
import { readFileSync } from "node:fs";
import { register } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

register("./json-as-module.mjs", import.meta.url);

const modules = process.env.LANGUAGESERVICE_MODULES;
const load = (name, file) => import(pathToFileURL(join(modules, name, file)).href);
const { validate } = await load("@actions/languageservice", "dist/index.js");
const { TextDocument } = await load("vscode-languageserver-textdocument", "lib/esm/main.js");
const YAML = await load("yaml", "dist/index.js");

const actionsMetadataProvider = {
  async fetchActionMetadata(reference) {
    if (reference.owner !== "OWNER" || reference.name !== "ci-integration") return undefined;
    const file = join(process.env.ACTIONS_ROOT, reference.path || "", "action.yml");
    return YAML.parse(readFileSync(file, "utf8"));
  },
};

const found = {};
for (const path of process.argv.slice(2)) {
  const text = readFileSync(path, "utf8");
  const document = TextDocument.create(pathToFileURL(path).href, "yaml", 1, text);
  const diagnostics = await validate(document, { actionsMetadataProvider });
  found[path] = diagnostics.map((d) => ({
    line: d.range.start.line + 1,
    severity: d.severity,
    message: d.message,
  }));
}
console.log(JSON.stringify(found));
