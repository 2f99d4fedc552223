// A real OpenID Provider (oidc-provider, certified) and a small resource-server API for
// Tessera's OAuth token-swap tests. Started by tests/common/oidc.rs as a child process:
//
//   node tests/oauth/provider.js [--fixed-origin]
//
// Binds the provider and the API on 127.0.0.1:0, prints ONE JSON line on stdout when ready:
//   {"issuer":"http://127.0.0.1:P","api":"http://127.0.0.1:Q"}
// and exits when stdin closes (the test process died or dropped it) or on SIGTERM.
//
// Nothing secret comes from outside: the client secrets below are fixed test fixtures (the Rust
// harness has the same constants); signing and cookie keys are generated at start. Nothing here
// prints a token, code, verifier or secret: oidc-provider's own debug output stays off (no DEBUG)
// and server errors are logged by name with long token-like strings masked.
//
// --fixed-origin: ignore X-Forwarded-Host/-Proto, so every URL the provider builds (discovery
// endpoints, redirects, form actions) is on the issuer's origin, as with an authorization server
// that knows nothing of Tessera's vanity hostname. Without it (default) the provider honours the
// forwarded headers Tessera sends (koa `proxy = true`) and builds URLs on the vanity hostname.
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const CALLBACK = 'https://integration.example/callback';
// Test fixtures, also in tests/common/oidc.rs.
const SECRETS = {
  integration: 'integration-test-secret-4f1c9a2e7b',
  'integration-static': 'integration-static-test-secret-8d3e6b0a5c',
  service: 'service-test-secret-2a7f4c9e1d',
  api: 'api-test-secret-6b0d3f8a2e',
};
const fixedOrigin = process.argv.includes('--fixed-origin');

// Requests the provider received, per endpoint (GET <api>/__hits).
const hits = { token: 0, revocation: 0, introspection: 0, total: 0 };
const HIT_PATHS = { '/token': 'token', '/token/revocation': 'revocation', '/token/introspection': 'introspection' };

/** Masks anything long and token-shaped in a log line. */
const mask = (s) => String(s).replace(/[A-Za-z0-9_~.+/=-]{16,}/g, '[masked]');

/** Binds an HTTP server to 127.0.0.1:0 and resolves with its port. */
function listen(server) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const providerServer = http.createServer();
const issuer = `http://127.0.0.1:${await listen(providerServer)}`;

const interactiveClient = (id) => ({
  client_id: id,
  client_secret: SECRETS[id],
  token_endpoint_auth_method: 'client_secret_basic',
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  redirect_uris: [CALLBACK],
  scope: 'openid offline_access api',
});

const provider = new Provider(issuer, {
  clients: [
    interactiveClient('integration'),
    interactiveClient('integration-static'),
    {
      client_id: 'service',
      client_secret: SECRETS.service,
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'api',
    },
    {
      client_id: 'api',
      client_secret: SECRETS.api,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  scopes: ['openid', 'offline_access', 'api'],
  // Any login name is an account; its only claim is `sub`.
  findAccount: (_ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
  features: {
    // The provider's own HTML login and consent pages (real forms, any login accepted).
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // The resource server `api` may introspect any token; a client only its own.
      allowedPolicy: (ctx, client, token) => client.clientId === 'api' || token.clientId === client.clientId,
    },
    revocation: {
      enabled: true,
      allowedPolicy: (_ctx, client, token) => token.clientId === client.clientId,
    },
  },
  pkce: { required: () => true }, // S256 is the only method oidc-provider 9 accepts
  // `integration` gets a new refresh token on every use (the old one is consumed);
  // `integration-static` keeps the same one.
  rotateRefreshToken: (ctx) => ctx.oidc.client.clientId === 'integration',
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    ClientCredentials: 600,
    Grant: 14 * 24 * 3600,
    IdToken: 3600,
    Interaction: 600,
    RefreshToken: 14 * 24 * 3600,
    Session: 24 * 3600,
  },
  jwks: { keys: [{ ...crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig' }] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
});
provider.proxy = !fixedOrigin;
provider.on('server_error', (ctx, err) => console.error(`provider: server_error on ${ctx.path}: ${err.name}: ${mask(err.message)}`));
// Count every request by endpoint before oidc-provider handles it.
provider.use(async (ctx, next) => {
  hits.total += 1;
  const endpoint = HIT_PATHS[ctx.path];
  if (endpoint) hits[endpoint] += 1;
  await next();
});
providerServer.on('request', provider.callback());

/** RFC 7662 introspection of `token` as the resource server `api`. */
async function introspect(token) {
  const res = await fetch(`${issuer}/token/introspection`, {
    method: 'POST',
    headers: {
      authorization: `Basic ${Buffer.from(`api:${SECRETS.api}`).toString('base64')}`,
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ token }),
  });
  if (res.status !== 200) throw new Error(`introspection answered ${res.status}`);
  return res.json();
}

function reply(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// The resource server: every request needs a live bearer token (checked by introspection);
// it answers who the token belongs to and the headers it received (never the token itself).
const apiServer = http.createServer(async (req, res) => {
  if (req.url === '/__hits') return reply(res, 200, hits);
  const m = /^Bearer ([^\s]+)$/.exec(req.headers.authorization ?? '');
  req.resume(); // a body is accepted and ignored
  if (!m) return reply(res, 401, { active: false });
  try {
    const info = await introspect(m[1]);
    // Only a live access token (a refresh token introspects without token_type).
    if (!info.active || info.token_type !== 'Bearer') return reply(res, 401, { active: false });
    const { authorization, ...headers } = req.headers;
    return reply(res, 200, { active: true, client_id: info.client_id, sub: info.sub, scope: info.scope, headers });
  } catch (err) {
    console.error(`api: ${err.name}: ${mask(err.message)}`);
    return reply(res, 502, { error: 'introspection failed' });
  }
});
const api = `http://127.0.0.1:${await listen(apiServer)}`;

// Die with the test: stdin closes when the parent drops it or exits.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));

process.stdout.write(`${JSON.stringify({ issuer, api })}\n`);
