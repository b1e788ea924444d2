// The language service imports its JSON schemas without an import attribute (it is
// meant to be bundled); node 20 refuses that. This hook serves a .json file as an ES
// module whose default export is the parsed document.
import { readFile } from "node:fs/promises";

export async function load(url, context, nextLoad) {
  if (!url.endsWith(".json")) return nextLoad(url, context);
  const text = await readFile(new URL(url), "utf8");
  return { format: "module", shortCircuit: true, source: `export default ${text};` };
}
