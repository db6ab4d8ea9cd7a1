// Validates Kubernetes objects of kinds kubernetes-validate has no schema for (Gateway API,
// Envoy Gateway, Prometheus Operator) against the schemas the npm packages of scripts/npm-tools
// carry (installed into .tools/npm by scripts/install-tools.sh):
//
//   node scripts/validate-crds.mjs < docs.json      (a JSON array of objects)
//
// Two checks per object, each printing one line; any failure exits 1:
// - the package's own validator: the field types, required fields, enums and patterns of the
//   project's Go API types (the source its CRDs are generated from);
// - unknown fields: the validators accept any extra key (a misspelt `headersToExtAuth` would pass
//   and be dropped by the API server), so every key is looked up in the package's type
//   declarations, the same Go types, and an unknown one is an error (as kubectl's
//   --validate=strict would make it).
// Not checked: the CRDs' CEL rules (x-kubernetes-validations), which only an API server runs.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const modules = path.join(process.env.TOOLS_NPM ?? path.join(here, "../.tools/npm"), "node_modules");

// apiVersion group -> the package that models it.
const packages = {
  "gateway.envoyproxy.io": "@kubernetes-models/envoy-gateway",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

// A declaration file's interfaces (name -> [{field, type}]), aliases exported under other
// names, and imports.
const parsed = new Map();
function parse(file) {
  if (parsed.has(file)) return parsed.get(file);
  const text = readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = new Map();
  for (const m of text.matchAll(/import \{([^}]*)\} from "([^"]+)";/g)) {
    for (const name of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      imports.set(name, m[2]);
    }
  }
  const exported = new Map();
  for (const m of text.matchAll(/export type \{([^}]*)\}/g)) {
    for (const part of m[1].split(",")) {
      const [local, as] = part.split(" as ").map((s) => s.trim());
      if (as) exported.set(as, local);
    }
  }
  const interfaces = new Map();
  for (const m of text.matchAll(/export interface (\w+)(?: extends ([\w, ]+))? \{/g)) {
    interfaces.set(m[1], { fields: fieldsOf(text, m.index + m[0].length), extends: m[2] });
  }
  const result = { file, imports, exported, interfaces };
  parsed.set(file, result);
  return result;
}

// The `"name"?: type;` members of the interface body starting at `start`, types kept whole
// (a map type `{ [key: string]: string; }` holds its own `;`).
function fieldsOf(text, start) {
  const fields = new Map();
  let i = start;
  for (;;) {
    const m = /^\s*(?:"([^"]+)"\??:\s*|\})/.exec(text.slice(i));
    if (!m || m[0].trim() === "}") return fields;
    i += m[0].length;
    let depth = 0;
    let j = i;
    for (; j < text.length; j++) {
      const c = text[j];
      if (c === "{" || c === "<" || c === "(") depth++;
      else if (c === "}" || c === ">" || c === ")") depth--;
      else if (c === ";" && depth === 0) break;
    }
    fields.set(m[1], text.slice(i, j).trim());
    i = j + 1;
  }
}

function declarationOf(from, spec) {
  const base = spec.startsWith(".") ? path.resolve(path.dirname(from), spec) : path.join(modules, spec);
  const file = base.replace(/\.js$/, "") + ".d.ts";
  if (!existsSync(file)) throw new Error(`no declarations for ${spec} (from ${from})`);
  return file;
}

// An interface by the name `name` has in `decl`: [decl, interface] or null for a plain type.
function resolve(decl, name) {
  if (decl.interfaces.has(name)) return [decl, decl.interfaces.get(name)];
  if (decl.exported.has(name)) return resolve(decl, decl.exported.get(name));
  if (decl.imports.has(name)) return resolve(parse(declarationOf(decl.file, decl.imports.get(name))), name);
  return null;
}

function allFields(decl, iface) {
  const fields = new Map(iface.fields);
  for (const parent of (iface.extends ?? "").split(",").map((s) => s.trim()).filter(Boolean)) {
    if (parent === "TypeMeta") continue; // apiVersion and kind, declared again by every kind
    const found = resolve(decl, parent);
    if (found) for (const [k, v] of allFields(...found)) fields.set(k, v);
  }
  return fields;
}

// Every key of `value` that its type does not declare, as a JSON pointer.
function unknownFields(decl, type, value, at, out) {
  type = type.trim();
  if (value === null || typeof value !== "object") return;
  let m;
  if ((m = /^Array<(.+)>$/s.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(decl, m[1], v, `${at}/${i}`, out));
    return;
  }
  if ((m = /^\{\s*\[key: string\]:\s*(.+?);?\s*\}$/s.exec(type))) {
    for (const [k, v] of Object.entries(value)) unknownFields(decl, m[1], v, `${at}/${k}`, out);
    return;
  }
  if (!/^\w+$/.test(type)) return; // a union of literals, a primitive: nothing below
  const found = resolve(decl, type);
  if (!found || Array.isArray(value)) return;
  const fields = allFields(...found);
  if (fields.size === 0) return; // an open object (e.g. apiextensions JSON)
  for (const [k, v] of Object.entries(value)) {
    if (!fields.has(k)) out.push(`${at}/${k}`);
    else unknownFields(found[0], fields.get(k), v, `${at}/${k}`, out);
  }
}

const docs = JSON.parse(readFileSync(0, "utf8"));
let failed = false;
for (const doc of docs) {
  const [group, version] = String(doc.apiVersion).split("/");
  const label = `${doc.kind} ${doc.metadata?.namespace ?? ""}/${doc.metadata?.name} (${doc.apiVersion})`;
  const pkg = packages[group];
  if (!pkg || !version) {
    console.log(`ERROR ${label}: no schema for this apiVersion`);
    failed = true;
    continue;
  }
  const sub = `${pkg}/${group}/${version}/${doc.kind}`;
  const js = path.join(modules, `${sub}.js`);
  if (!existsSync(js)) {
    console.log(`ERROR ${label}: ${pkg} has no kind ${doc.kind} in ${version}`);
    failed = true;
    continue;
  }
  const Model = (await import(pathToFileURL(js)))[doc.kind];
  try {
    new Model(doc).validate();
    console.log(`PASS schema ${label}`);
  } catch (e) {
    console.log(`ERROR schema ${label}: ${e.message}`);
    failed = true;
  }
  const decl = parse(declarationOf(js, `./${doc.kind}.js`));
  const unknown = [];
  unknownFields(decl, `I${doc.kind}`, doc, "", unknown);
  if (unknown.length) {
    console.log(`ERROR fields ${label}: unknown ${unknown.join(", ")}`);
    failed = true;
  } else {
    console.log(`PASS fields ${label}`);
  }
}
process.exit(failed ? 1 : 0);
