// Drives the `webdav` npm package (perry-mitchell/webdav-client) through the steps of
// tests/e2e/clients/scenario.py: a JSON plan on stdin, one JSON result per step on stdout.
// Usage: node driver.mjs BASE_URL USER PASSWORD < plan.json
// Paths are given to the library decoded, as its documentation says; it encodes them.
import { createReadStream, readFileSync, writeFileSync } from "node:fs";
import { stat as fsStat } from "node:fs/promises";
import { createClient } from "webdav";

const [baseUrl, username, password] = process.argv.slice(2);
const client = createClient(baseUrl, { username, password });
// A second instance: knows nothing of the first one's locks.
const foreign = createClient(baseUrl, { username, password });
const tokens = new Map();

async function put(c, step) {
    const headers = step.locked ? { If: `(<${tokens.get(step.lock_of ?? step.path)}>)` } : {};
    const options = { headers, overwrite: step.overwrite !== false }; // false: If-None-Match: *
    let written;
    if (step.stream) {
        const { size } = await fsStat(step.file);
        written = await c.putFileContents(step.path, createReadStream(step.file), { ...options, contentLength: size });
    } else {
        written = await c.putFileContents(step.path, readFileSync(step.file), options);
    }
    if (!written) {
        // the library's answer to a 412 when told not to overwrite
        throw Object.assign(new Error("not written: the file exists"), { status: 412 });
    }
    return written;
}

const ops = {
    mkdir: (s) => client.createDirectory(s.path),
    put: (s) => put(client, s),
    put_foreign: (s) => put(foreign, s),
    list: async (s) =>
        (await client.getDirectoryContents(s.path)).map((item) => ({
            name: item.basename,
            size: item.size,
            dir: item.type === "directory",
        })),
    get: async (s) => {
        const data = await client.getFileContents(s.path, { format: "binary" });
        writeFileSync(s.file, Buffer.from(data));
        return data.byteLength;
    },
    copy: (s) => client.copyFile(s.from, s.to, { overwrite: s.overwrite !== false, shallow: s.depth === "0" }),
    move: (s) => {
        const token = tokens.get(s.from);
        const headers = token ? { If: `(<${token}>)` } : {};
        return client.moveFile(s.from, s.to, { headers, overwrite: s.overwrite !== false });
    },
    delete: (s) => client.deleteFile(s.path),
    lock: async (s) => {
        const { token } = await client.lock(s.path); // no Depth header: infinity
        tokens.set(s.path, token);
        return token;
    },
    unlock: async (s) => {
        await client.unlock(s.path, tokens.get(s.path));
        tokens.delete(s.path);
    },
};

const plan = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const step of plan) {
    try {
        const value = await ops[step.op](step);
        results.push({ ok: true, value: value === undefined ? null : value });
    } catch (err) {
        const status = err.status ?? err.response?.status ?? null;
        results.push({ ok: false, status, error: String(err && err.stack ? err.stack : err) });
    }
}
process.stdout.write(JSON.stringify(results));
