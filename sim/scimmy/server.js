// SCIMMY (with its Express routers) as a second PBX for the tests: a SCIM 2.0
// server implementation we did not write. Only the glue is ours: an in-memory
// store, the uniqueness the schemas ask for ("server"), and VeloPBX's schemas
// (contrib/scim/) declared to SCIMMY, the Contact resource type included.
//
// node server.js --port N --token T --schemas DIR
// prints "Serving SCIM on http://127.0.0.1:N/v2" once it listens, and one access
// line per request on stderr: "METHOD /v2/path HTTP/1.1" STATUS.
import {randomUUID} from "node:crypto";
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {parseArgs} from "node:util";
import express from "express";
import SCIMMY from "scimmy";
import SCIMMYRouters from "scimmy-routers";

const {values: args} = parseArgs({options: {port: {type: "string"}, token: {type: "string"}, schemas: {type: "string"}}});
const schemas = JSON.parse(readFileSync(join(args.schemas, "schemas.json"), "utf8"));
const resourceTypes = JSON.parse(readFileSync(join(args.schemas, "resource-types.json"), "utf8"));
const byId = Object.fromEntries(schemas.map(s => [s.id, s]));

// --- the schema files, as SCIMMY definitions ---

function attribute(spec) {
    const config = {
        multiValued: !!spec.multiValued, required: !!spec.required, caseExact: !!spec.caseExact,
        // SCIMMY spells "readWrite" true, "readOnly" false, "default" true and "never" false
        mutable: {readWrite: true, readOnly: false}[spec.mutability ?? "readWrite"] ?? spec.mutability,
        returned: {default: true, never: false}[spec.returned ?? "default"] ?? spec.returned,
        uniqueness: spec.uniqueness ?? "none", description: spec.description ?? "",
        ...(spec.canonicalValues ? {canonicalValues: spec.canonicalValues} : {}),
        ...(spec.referenceTypes ? {referenceTypes: spec.referenceTypes} : {}),
    };
    return new SCIMMY.Types.Attribute(spec.type, spec.name, config, (spec.subAttributes ?? []).map(attribute));
}

// SCIMMY 1.x accepts only schema ids under "urn:ietf:params:scim:schemas:" when a definition is
// made; VeloPBX's ids are "urn:velopbx:params:scim:schemas:...". The definition is made under the
// IETF prefix and then given its real id, which is all SCIMMY reads from then on.
function definition(urn) {
    const spec = byId[urn];
    const made = new SCIMMY.Types.SchemaDefinition(spec.name, urn.replace(/^urn:[^:]+:/, "urn:ietf:"),
        spec.description ?? "", spec.attributes.map(attribute));
    made.id = urn;
    return made;
}

// The core User and Group schemas are SCIMMY's own; the extensions are VeloPBX's.
const extensions = {User: SCIMMY.Resources.User, Group: SCIMMY.Resources.Group};
for (const type of resourceTypes) {
    for (const extension of type.schemaExtensions ?? []) {
        const known = extension.schema === SCIMMY.Schemas.EnterpriseUser.id ? SCIMMY.Schemas.EnterpriseUser : definition(extension.schema);
        extensions[type.id].extend(known, !!extension.required);
    }
}

// The Contact resource type: a schema class and a resource class, as SCIMMY's own User is made.
const contactType = resourceTypes.find(t => t.id === "Contact");
const contactDefinition = definition(contactType.schema);

class ContactSchema extends SCIMMY.Types.Schema {
    static get id() { return contactDefinition.id; }
    static get definition() { return contactDefinition; }
    constructor(resource, direction = "both", basepath, filters) {
        super(resource, direction);
        Object.assign(this, contactDefinition.coerce(resource, direction, basepath, filters));
    }
}

class Contact extends SCIMMY.Types.Resource {
    static #basepath;
    static #handlers = {};
    static get endpoint() { return contactType.endpoint; }
    static basepath(path) {
        if (path === undefined) return Contact.#basepath;
        Contact.#basepath = path.endsWith(Contact.endpoint) ? path : `${path}${Contact.endpoint}`;
        return Contact;
    }
    static get schema() { return ContactSchema; }
    static ingress(handler) { Contact.#handlers.ingress = handler; return Contact; }
    static egress(handler) { Contact.#handlers.egress = handler; return Contact; }
    static degress(handler) { Contact.#handlers.degress = handler; return Contact; }

    async read(ctx) {
        const found = await Contact.#handlers.egress(this, ctx);
        if (this.id) return new ContactSchema(found, "out", Contact.basepath(), this.attributes);
        return new SCIMMY.Messages.ListResponse(found.map(c => new ContactSchema(c, "out", Contact.basepath(), this.attributes)), this.constraints);
    }

    async write(instance, ctx) {
        if (Object(instance) !== instance || Array.isArray(instance))
            throw new SCIMMY.Types.Error(400, "invalidSyntax", "expected one complex value");
        let parsed;
        try {
            parsed = new ContactSchema(instance, "in");
        } catch (ex) {
            throw new SCIMMY.Types.Error(400, "invalidValue", ex.message);
        }
        return new ContactSchema(await Contact.#handlers.ingress(this, parsed, ctx), "out", Contact.basepath(), this.attributes);
    }

    async patch(message, ctx) {
        if (!this.id) throw new SCIMMY.Types.Error(404, null, "PATCH must target one resource");
        return await new SCIMMY.Messages.PatchOp(message)
            .apply(await this.read(ctx), async (instance) => await this.write(instance, ctx))
            .then(instance => !instance ? undefined : new ContactSchema(instance, "out", Contact.basepath(), this.attributes));
    }

    async dispose(ctx) {
        if (!this.id) throw new SCIMMY.Types.Error(404, null, "DELETE must target one resource");
        await Contact.#handlers.degress(this, ctx);
    }
}

// --- the in-memory store ---

// Values that must be unique among a type's objects ("uniqueness": "server" in the schema files).
const UNIQUE = {
    User: [u => u.userName?.toLowerCase(), u => u["urn:velopbx:params:scim:schemas:extension:pbx:2.0:User"]?.extensionNumber],
    Group: [g => g["urn:velopbx:params:scim:schemas:extension:pbx:2.0:Group"]?.extensionNumber],
    Contact: [],
};

function withExtensionPaths(object) {
    const view = {...object};
    for (const [key, value] of Object.entries(object)) {
        if (key.startsWith("urn:") && Object(value) === value && !Array.isArray(value))
            for (const [attribute, inner] of Object.entries(value)) view[`${key}:${attribute}`] = inner;
    }
    return view;
}

function declare(Resource, name) {
    const objects = new Map();
    const plain = (instance) => JSON.parse(JSON.stringify(instance));
    SCIMMY.Resources.declare(Resource)
        .egress((resource) => {
            if (resource.id) {
                if (!objects.has(resource.id)) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
                return objects.get(resource.id);
            }
            const all = [...objects.values()];
            if (!resource.filter) return all;
            // SCIMMY's Filter.match reads attributes by name only: an extension's attribute
            // ("urn:...:User:extensionNumber") is also shown to it under its full path.
            const views = new Map(all.map(o => [withExtensionPaths(o), o]));
            return resource.filter.match([...views.keys()]).map(v => views.get(v));
        })
        .ingress((resource, instance) => {
            const id = resource.id ?? randomUUID();
            if (resource.id && !objects.has(id)) throw new SCIMMY.Types.Error(404, null, `Resource ${id} not found`);
            const data = plain(instance);
            for (const key of UNIQUE[name]) {
                const value = key(data);
                if (value && [...objects.values()].some(o => o.id !== id && key(o) === value))
                    throw new SCIMMY.Types.Error(409, "uniqueness", `${name} ${value} is already taken`);
            }
            const now = new Date();
            const created = objects.get(id)?.meta?.created ?? now;
            const stored = {...data, id, meta: {resourceType: name, created, lastModified: now}};
            objects.set(id, stored);
            return stored;
        })
        .degress((resource) => {
            if (!objects.delete(resource.id)) throw new SCIMMY.Types.Error(404, null, `Resource ${resource.id} not found`);
        });
}

declare(SCIMMY.Resources.User, "User");
declare(SCIMMY.Resources.Group, "Group");
declare(Contact, "Contact");

SCIMMY.Config.set({
    patch: true,
    filter: {supported: true, maxResults: 200},
    bulk: {supported: true, maxOperations: 100, maxPayloadSize: 4194304},
    etag: false, changePassword: false, sort: false,
});

// --- HTTP ---

const app = express();
app.set("etag", false);  // SCIMMY announces no ETags; Express would otherwise hash every body into one
app.use((req, res, next) => {
    res.on("finish", () => process.stderr.write(`"${req.method} ${req.originalUrl} HTTP/1.1" ${res.statusCode}\n`));
    next();
});
// SCIMMY 1.3 answers 400 ("Cannot read properties of undefined") to an `attributes` list naming an
// extension's attribute, its own enterprise extension included: such a list is dropped, and the
// whole objects are returned (more than was asked, which a client must accept).
app.use((req, res, next) => {
    const asked = new URL(req.url, "http://pbx").searchParams;
    if ((asked.get("attributes") ?? "").includes("urn:")) {
        asked.delete("attributes");
        req.url = `${req.path}?${asked}`;
    }
    next();
});
app.use("/v2", new SCIMMYRouters({
    type: "bearer",
    handler: (request) => {
        if (request.header("Authorization") !== `Bearer ${args.token}`) throw new Error("Authorization failed");
        return "m365sync";
    },
}));
const server = app.listen(Number(args.port), "127.0.0.1", () => {
    process.stdout.write(`Serving SCIM on http://127.0.0.1:${args.port}/v2\n`);
});
server.on("error", (err) => { process.stderr.write(`${err}\n`); process.exit(1); });
