// The /docs page: reads /openapi.json and writes every operation, its parameters,
// request body and responses, then the named schemas. Text goes in through
// textContent only, so nothing in the document can become markup.

const METHODS = ["get", "post", "put", "patch", "delete"];

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function refName(ref) {
  return ref.split("/").pop();
}

function typeOf(schema) {
  if (!schema) return "any";
  if (schema.$ref) return refName(schema.$ref);
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "array") return `array of ${typeOf(schema.items)}`;
  const bounds = [];
  if (schema.minimum !== undefined) bounds.push(`≥ ${schema.minimum}`);
  if (schema.maximum !== undefined) bounds.push(`≤ ${schema.maximum}`);
  if (schema.minLength !== undefined) bounds.push(`length ≥ ${schema.minLength}`);
  if (schema.maxLength !== undefined) bounds.push(`length ≤ ${schema.maxLength}`);
  if (schema.pattern) bounds.push(`pattern ${schema.pattern}`);
  const type = [].concat(schema.type || (schema.oneOf ? "one of" : "object")).join(" | ");
  return bounds.length ? `${type} (${bounds.join(", ")})` : type;
}

function schemaView(schema) {
  if (!schema) return el("span", { class: "type" }, "any");
  if (schema.$ref) {
    return el("a", { href: `#schema-${refName(schema.$ref)}`, class: "type" }, refName(schema.$ref));
  }
  const variants = schema.oneOf || schema.anyOf;
  if (variants) {
    return el("ul", { class: "schema" }, ...variants.map((v) => el("li", {}, "one of: ", schemaView(v))));
  }
  if (schema.type === "array" && schema.items && !schema.items.$ref && schema.items.properties) {
    return el("div", {}, el("span", { class: "type" }, "array of"), schemaView(schema.items));
  }
  if (!schema.properties) return el("span", { class: "type" }, typeOf(schema));
  const required = new Set(schema.required || []);
  const rows = Object.entries(schema.properties).map(([name, property]) =>
    el(
      "li",
      {},
      el("code", {}, name),
      " ",
      required.has(name) ? el("span", { class: "required" }, "required ") : null,
      property.properties || property.oneOf ? schemaView(property) : null,
      property.properties || property.oneOf ? null : property.$ref ? schemaView(property) : el("span", { class: "type" }, typeOf(property)),
      property.description ? el("div", { class: "muted" }, property.description) : null,
    ),
  );
  return el("ul", { class: "schema" }, ...rows);
}

function parametersView(parameters) {
  if (!parameters || parameters.length === 0) return null;
  const rows = parameters.map((p) =>
    el(
      "tr",
      {},
      el("td", {}, el("code", {}, p.name), p.required ? el("span", { class: "required" }, " required") : null),
      el("td", {}, p.in),
      el("td", { class: "type" }, typeOf(p.schema)),
      el("td", {}, p.description || ""),
    ),
  );
  const head = el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, ""));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

function bodyView(body) {
  if (!body || !body.content) return null;
  const [type, media] = Object.entries(body.content)[0];
  return el("div", {}, el("h4", {}, `Request body (${type})`), schemaView(media.schema));
}

function responsesView(responses) {
  const rows = Object.entries(responses || {}).map(([status, response]) => {
    const media = response.content ? Object.values(response.content)[0] : null;
    const schema = media && media.schema;
    const named = schema && schema.$ref ? schemaView(schema) : null;
    return el("tr", {}, el("td", {}, el("code", {}, status)), el("td", {}, response.description || "", named ? " → " : null, named));
  });
  return el("div", {}, el("h4", {}, "Responses"), el("table", {}, el("tbody", {}, ...rows)));
}

function operationId(method, path) {
  return `op-${method}-${path.replace(/[^0-9A-Za-z]+/g, "-")}`;
}

function operationView(method, path, op) {
  return el(
    "section",
    { class: "operation", id: operationId(method, path) },
    el("h3", {}, el("span", { class: `method ${method}` }, method.toUpperCase()), el("span", { class: "path" }, path)),
    op.summary ? el("p", {}, op.summary) : null,
    op.description && op.description !== op.summary ? el("p", { class: "muted" }, op.description) : null,
    (op.security || []).length > 0 && !/token/.test(op.description || "") ? el("p", { class: "muted" }, "Needs a bearer token.") : null,
    parametersView(op.parameters),
    bodyView(op.requestBody),
    responsesView(op.responses),
  );
}

function render(doc) {
  document.title = `${doc.info.title} API`;
  document.getElementById("title").textContent = `${doc.info.title} API ${doc.info.version || ""}`;
  document.getElementById("description").textContent = doc.info.description || "";
  document.getElementById("version").textContent = doc.openapi;

  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      if (!item[method]) continue;
      const tag = (item[method].tags || ["other"])[0];
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([method, path, item[method]]);
    }
  }
  const main = document.getElementById("operations");
  const toc = document.getElementById("toc");
  main.replaceChildren();
  for (const [tag, operations] of byTag) {
    main.append(el("h2", { id: `tag-${tag}` }, tag));
    const links = [];
    for (const [method, path, op] of operations) {
      main.append(operationView(method, path, op));
      links.push(el("li", {}, el("a", { href: `#${operationId(method, path)}` }, `${method.toUpperCase()} ${path}`)));
    }
    toc.append(el("h3", {}, tag), el("ul", {}, ...links));
  }
  main.setAttribute("aria-busy", "false");

  const schemas = (doc.components && doc.components.schemas) || {};
  const section = document.getElementById("schemas");
  section.append(el("h2", {}, "Schemas"));
  for (const [name, schema] of Object.entries(schemas)) {
    section.append(el("div", { id: `schema-${name}`, class: "operation" }, el("h3", {}, name), schema.description ? el("p", { class: "muted" }, schema.description) : null, schemaView(schema)));
  }
}

async function main() {
  const response = await fetch("/openapi.json");
  if (!response.ok) throw new Error(`/openapi.json answered ${response.status}`);
  render(await response.json());
}

main().catch((error) => {
  const operations = document.getElementById("operations");
  operations.replaceChildren(el("p", { class: "error" }, `Could not load the API description: ${error.message}`));
});
