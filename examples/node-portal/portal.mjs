#!/usr/bin/env node
// A second portal for Crocevia, in Node.js (20+) with the standard library only: it signs one
// filing the AgID ModI way (docs/modi-recipe.md), submits it, then polls its status until every
// recipient has settled, printing the hub's reference and each agency's protocol number.
//
//   node portal.mjs --url http://127.0.0.1:8080 --portal acme --key acme.pem [--user CF] FILE
//
// Options may come from the environment instead: CROCEVIA_URL, CROCEVIA_PORTAL,
// CROCEVIA_PORTAL_KEY (a PEM file: EC P-256 signs ES256, RSA signs RS256), CROCEVIA_USER,
// CROCEVIA_AUDIENCE. Exit status: 0 settled, 1 refused by the hub, 2 hub unreachable,
// 3 not settled in time, 64 bad usage.

import { createHash, createPrivateKey, randomUUID, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

const TERMINAL = new Set(["protocolled", "partially_rejected", "rejected", "undeliverable"]);
const TRACKING = "Agid-JWT-TrackingEvidence";
const SIGNATURE = "Agid-JWT-Signature";

function usage(message) {
  console.error(`error: ${message}`);
  console.error("usage: node portal.mjs --url URL --portal ID --key KEY.pem [--user TAX_CODE] " +
    "[--auth SPID2] [--location WHERE] [--audience crocevia] [--timeout 60] FILE(.xml|.json)");
  process.exit(64);
}

function options() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        url: { type: "string", default: process.env.CROCEVIA_URL },
        portal: { type: "string", default: process.env.CROCEVIA_PORTAL },
        key: { type: "string", default: process.env.CROCEVIA_PORTAL_KEY },
        user: { type: "string", default: process.env.CROCEVIA_USER },
        auth: { type: "string", default: "SPID2" },
        location: { type: "string", default: "127.0.0.1" },
        audience: { type: "string", default: process.env.CROCEVIA_AUDIENCE ?? "crocevia" },
        timeout: { type: "string", default: "60" },
        json: { type: "boolean", default: false },
      },
    });
  } catch (err) {
    usage(err.message);
  }
  const opts = parsed.values;
  if (parsed.positionals.length !== 1) usage("name exactly one filing file");
  for (const name of ["url", "portal", "key"]) if (!opts[name]) usage(`--${name} is required`);
  return { ...opts, file: parsed.positionals[0], timeout: Number(opts.timeout) };
}

// -- JWS (RFC 7515 compact form) with node:crypto --------------------------------------------------

const b64url = (data) => Buffer.from(data).toString("base64url");

function signer(pem, issuer, audience) {
  const key = createPrivateKey(pem);
  // ES256 is ECDSA P-256 over SHA-256 with the signature as r||s (RFC 7518 3.4), not DER.
  const alg = key.asymmetricKeyType === "ec" ? "ES256" : key.asymmetricKeyType === "rsa" ? "RS256" : null;
  if (alg === null) throw new Error(`unsupported key type ${key.asymmetricKeyType} (EC P-256 or RSA)`);
  return (claims) => {
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ alg, typ: "JWT" }));
    const payload = b64url(JSON.stringify({
      iss: issuer, sub: issuer, aud: audience, iat: now, nbf: now, exp: now + 60, jti: randomUUID(), ...claims,
    }));
    const input = `${header}.${payload}`;
    const signature = sign("sha256", Buffer.from(input), alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key);
    return `${input}.${b64url(signature)}`;
  };
}

// The user as the portal's SPID/CIE/CNS login vouched for them: SPID1..3, CIE or CNS.
function userClaims(taxCode, auth, location) {
  const upper = auth.toUpperCase();
  const method = upper.startsWith("SPID") ? "SPID" : upper.slice(0, 3);
  const level = upper.startsWith("SPID") ? upper.slice(4) : "3";
  const loa = `${method === "SPID" ? "Spid" : method === "CIE" ? "Cie" : ""}L${level}`;
  return { userID: `TINIT-${taxCode}`, userLocation: location, LoA: loa, authMethod: method };
}

// The ModI headers of one request (ID_AUTH_REST_02, INTEGRITY_REST_01 with a body, AUDIT_REST_02).
function modiHeaders(jws, user, body, contentType) {
  const headers = {};
  const evidence = jws(user);
  headers[TRACKING] = evidence;
  const auth = { digest: { alg: "SHA256", value: createHash("sha256").update(evidence).digest("hex") } };
  if (body) {
    const digest = `SHA-256=${createHash("sha256").update(body).digest("base64")}`;
    headers.Digest = digest;
    headers["Content-Type"] = contentType;
    headers[SIGNATURE] = jws({ signed_headers: [{ digest }, { "content-type": contentType }] });
  }
  headers.Authorization = `Bearer ${jws(auth)}`;
  return headers;
}

// -- the filing -------------------------------------------------------------------------------------

function declarantOf(text, isJson) {
  if (isJson) return JSON.parse(text)?.declarant?.taxCode ?? "";
  const declarant = /<(?:\w+:)?declarant\b[^>]*>([\s\S]*?)<\/(?:\w+:)?declarant>/.exec(text);
  const taxCode = declarant && /<(?:\w+:)?taxCode>\s*([^<\s]+)\s*</.exec(declarant[1]);
  return taxCode ? taxCode[1] : "";
}

async function call(base, method, path, headers, body) {
  try {
    return await fetch(new URL(path, base), { method, headers, body });
  } catch (err) {
    console.error(`error: cannot reach the hub at ${base}: ${err.cause?.code ?? err.message}`);
    process.exit(2);
  }
}

async function refuse(response) {
  const text = await response.text();
  let problem;
  try { problem = JSON.parse(text); } catch { problem = { title: `HTTP ${response.status}`, detail: text.slice(0, 200) }; }
  const named = problem.claim ? ` [${problem.token} claim ${problem.claim}]` : "";
  console.error(`error: ${response.status} ${problem.title ?? ""}: ${problem.detail ?? ""}${named}`);
  process.exit(1);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function main() {
  const opts = options();
  const body = readFileSync(opts.file);
  const isJson = opts.file.toLowerCase().endsWith(".json");
  const contentType = isJson ? "application/json" : "application/xml";
  const taxCode = opts.user || declarantOf(body.toString("utf8"), isJson);
  if (!taxCode) usage(`${opts.file}: no declarant tax code found; name the user with --user`);
  const jws = signer(readFileSync(opts.key), opts.portal, opts.audience);
  const user = userClaims(taxCode.toUpperCase(), opts.auth, opts.location);

  const submitted = await call(opts.url, "POST", "/v1/filings", modiHeaders(jws, user, body, contentType), body);
  if (submitted.status !== 202) await refuse(submitted);
  const { reference } = await submitted.json();
  console.log(`reference ${reference}`);

  // Every request is signed anew (a new jti): the hub refuses to see a token twice.
  const deadline = Date.now() + opts.timeout * 1000;
  let view;
  let last = "";
  for (let wait = 100; ; wait = Math.min(wait * 2, 1000)) {
    const answer = await call(opts.url, "GET", `/v1/filings/${encodeURIComponent(reference)}`, modiHeaders(jws, user));
    if (answer.status !== 200) await refuse(answer);
    view = await answer.json();
    if (view.state !== last) console.error(`... ${reference}: ${view.state}`);
    last = view.state;
    if (TERMINAL.has(view.state)) break;
    if (Date.now() > deadline) {
      console.error(`error: ${reference} not settled after ${opts.timeout} s (state ${view.state})`);
      process.exit(3);
    }
    await sleep(wait);
  }
  if (opts.json) {
    console.log(JSON.stringify(view, null, 2));
    return;
  }
  console.log(`state ${view.state}`);
  for (const r of view.recipients) {
    console.log(`recipient ${r.agency} ${r.state} ${r.protocolNumber ?? "-"}`);
  }
}

await main();
