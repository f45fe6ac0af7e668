// A real OpenID Provider (panva/oidc-provider) on 127.0.0.1 for Portcullis's tests.
// Usage: node op.js <client_id> <client_secret> <redirect_uri> [<redirect_uri>...]
// OP_AUTH_METHOD=client_secret_post registers the client for secrets in the request body.
// OP_ACCESS_TTL=<seconds> shortens access and ID tokens (refresh tests).
// OP_BACKCHANNEL=<url> registers a back-channel logout URI (called with TLS checks off and every
// host resolved to 127.0.0.1: test only).
// POST /__test/refuse-tokens makes the token endpoint refuse every later grant.
// Prints "READY <issuer>" once listening; then "REFRESH" for every refresh-token grant and
// "USERINFO" for every userinfo request and "JWKS" for every key-set request.
// Users: any name, password "secret". Claims by name prefix: admin-* (groups staff, chat-admins;
// org corp), acme-* / globex-* (group customer; org acme / globex), nogroups-* (no groups),
// anyone else (groups staff, chat-users). The user "mfa-*", or any sign-in asked for
// acr_values urn:example:mfa, gets amr [pwd, otp] and acr urn:example:mfa.
//
// Machine clients (access tokens for bearer-token tests), besides <client_id> above:
//   acme-bot / acme-bot-secret and globex-bot / globex-bot-secret: client_credentials only,
//   client_secret_basic, scopes "chat chat:admin". Their tokens carry org {id: acme|globex} and
//   groups [bots]; sub is the client id.
// POST /token grant_type=client_credentials&scope=chat[&resource=urn:chat-api]: with a resource
// (any urn:...) a JWT access token (RFC 9068, typ at+jwt, aud = the resource, claims iss sub
// client_id scope org groups iat exp jti) signed by the RSA key; without one an opaque token.
// Introspection at /token/introspection (introspection_endpoint in discovery): <client_id>
// may introspect any token, the bots only their own; JWTs are refused (unsupported_token_type).
// (oidc-provider takes a client secret by HTTP Basic or in the body alike, for every client.)
// OP_RSA_JWK=<file> is the RSA signing key (a private JWK as JSON, with kid) for access tokens,
// published next to the ES256 ID-token key (kid test-es256); without it one is generated
// (kid test-rs256). OP_AT_ALG=PS256 signs access tokens with PS256 instead of RS256 (the
// published RSA key then says alg PS256). OP_AT_TTL=<seconds> sets the client-credentials
// token lifetime (oidc-provider's default: 600).
import { readFileSync } from 'node:fs';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const [clientId, clientSecret, ...redirectUris] = process.argv.slice(2);
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const atAlg = process.env.OP_AT_ALG || 'RS256';
const rsaKey = { ...(await rsaJwk()), alg: atAlg, use: 'sig' };
const botOrgs = { 'acme-bot': 'acme', 'globex-bot': 'globex' };
const bot = (id) => ({
  client_id: id,
  client_secret: `${id}-secret`,
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'ES256',
  scope: 'chat chat:admin',
});
const ttl = {
  ...(process.env.OP_ACCESS_TTL ? { AccessToken: Number(process.env.OP_ACCESS_TTL), IdToken: Number(process.env.OP_ACCESS_TTL) } : {}),
  ...(process.env.OP_AT_TTL ? { ClientCredentials: Number(process.env.OP_AT_TTL) } : {}),
};

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: redirectUris,
    post_logout_redirect_uris: redirectUris.map((u) => u.replace('/oidc/callback', '/signed-out')),
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: process.env.OP_AUTH_METHOD || 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    ...(process.env.OP_BACKCHANNEL ? { backchannel_logout_uri: process.env.OP_BACKCHANNEL, backchannel_logout_session_required: true } : {}),
  }, ...Object.keys(botOrgs).map(bot)],
  acrValues: ['urn:example:loa:1', 'urn:example:loa:2', 'urn:example:mfa'],
  ttl,
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  fetch: (url, options) => {
    // Test only: reach the proxy under test on loopback, with its development certificate.
    const Agent = options.dispatcher.constructor;
    const lookup = (hostname, opts, cb) => (opts && opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4));
    return globalThis.fetch(url, { ...options, dispatcher: new Agent({ connect: { rejectUnauthorized: false, lookup } }) });
  },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', 'chat', 'chat:admin'],
  claims: { openid: ['sub', 'amr', 'acr', 'sid', 'auth_time'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups', 'org'] },
  conformIdTokenClaims: false,
  features: {
    devInteractions: { enabled: false },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      allowedPolicy: async (ctx, client, token) => client.clientId === clientId || client.clientId === token.clientId,
    },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: async (ctx, resource) => {
        if (!resource.startsWith('urn:')) throw new errors.InvalidTarget();
        return {
          scope: 'chat chat:admin',
          audience: resource,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: atAlg, kid: rsaKey.kid } },
        };
      },
    },
  },
  // Claims of machine tokens (JWT payload and introspection answer alike). Without an account
  // oidc-provider leaves sub out of introspection (the JWT has sub = client_id anyway).
  extraTokenClaims: async (ctx, token) => {
    if (token.kind !== 'ClientCredentials') return undefined;
    const org = botOrgs[token.clientId];
    return { sub: token.clientId, ...(org ? { org: { id: org }, groups: ['bots'] } : {}) };
  },
  jwks: { keys: [await generateKey(), rsaKey] },
  cookies: { keys: ['portcullis-test-op'], names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' } },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@corp.test`, email_verified: true, name: `User ${id}`, ...profile(id) }),
  }),
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid email profile groups');
    await grant.save();
    return grant;
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
});
provider.proxy = false;
provider.on('grant.success', (ctx) => {
  if (ctx.oidc.params.grant_type === 'refresh_token') console.log('REFRESH');
});
provider.on('backchannel.error', (ctx, err) => console.log(`BACKCHANNEL-ERROR ${err}`));
provider.on('backchannel.success', () => console.log('BACKCHANNEL-OK'));

function profile(id) {
  if (id.startsWith('admin-')) return { groups: ['staff', 'chat-admins'], org: { id: 'corp' } };
  if (id.startsWith('acme-')) return { groups: ['customer'], org: { id: 'acme' } };
  if (id.startsWith('globex-')) return { groups: ['customer'], org: { id: 'globex' } };
  if (id.startsWith('nogroups-')) return { groups: [] };
  return { groups: ['staff', 'chat-users'] };
}

async function generateKey() {
  const { generateKeyPair, exportJWK } = await import('jose');
  const { privateKey } = await generateKeyPair('ES256', { extractable: true });
  return { ...(await exportJWK(privateKey)), alg: 'ES256', use: 'sig', kid: 'test-es256' };
}

// The access-token signing key: OP_RSA_JWK's private JWK (tests keep it to forge tokens), or a
// fresh 2048-bit one.
async function rsaJwk() {
  if (process.env.OP_RSA_JWK) return JSON.parse(readFileSync(process.env.OP_RSA_JWK, 'utf8'));
  const { generateKeyPair, exportJWK } = await import('jose');
  const { privateKey } = await generateKeyPair('RS256', { extractable: true, modulusLength: 2048 });
  return { ...(await exportJWK(privateKey)), kid: 'test-rs256' };
}

function readBody(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => resolve(new URLSearchParams(data)));
  });
}

const callback = provider.callback();
let refuseTokens = false;
server.on('request', async (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path === '/me') console.log('USERINFO');
  if (path === '/jwks') console.log('JWKS');
  // Test control: from now on the token endpoint refuses every grant (a revoked refresh token).
  if (path === '/__test/refuse-tokens') {
    refuseTokens = true;
    res.writeHead(204);
    return res.end();
  }
  if (refuseTokens && path === '/token') {
    res.writeHead(400, { 'content-type': 'application/json' });
    return res.end(JSON.stringify({ error: 'invalid_grant', error_description: 'grant revoked' }));
  }
  const match = new URL(req.url, issuer).pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) return callback(req, res);
  try {
    const details = await provider.interactionDetails(req, res);
    if (req.method === 'POST' && match[2]) {
      const form = await readBody(req);
      if (form.get('password') !== 'secret') {
        res.writeHead(401, { 'content-type': 'text/html' });
        return res.end('wrong password');
      }
      const user = form.get('username');
      const asked = String(details.params.acr_values || '').split(' ').includes('urn:example:mfa');
      const mfa = user.startsWith('mfa-') || asked;
      const amr = mfa ? ['pwd', 'otp'] : ['pwd'];
      const acr = mfa ? 'urn:example:mfa' : 'urn:example:loa:1';
      return provider.interactionFinished(req, res, { login: { accountId: user, amr, acr } }, { mergeWithLastSubmission: false });
    }
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(`<form method="post" action="/interaction/${details.uid}/login">
      <input name="username"><input name="password" type="password"><button>Sign in</button></form>`);
  } catch (err) {
    res.writeHead(500);
    res.end(String(err));
  }
});

console.log(`READY ${issuer}`);
