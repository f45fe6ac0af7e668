// A real OpenID Provider (panva/oidc-provider) on 127.0.0.1 for Portcullis's tests.
// Usage: node op.js <client_id> <client_secret> <redirect_uri> [<redirect_uri>...]
// OP_AUTH_METHOD=client_secret_post registers the client for secrets in the request body.
// OP_ACCESS_TTL=<seconds> shortens access and ID tokens (refresh tests).
// OP_BACKCHANNEL=<url> registers a back-channel logout URI (called with TLS checks off and every
// host resolved to 127.0.0.1: test only).
// POST /__test/refuse-tokens makes the token endpoint refuse every later grant.
// Prints "READY <issuer>" once listening; then "REFRESH" for every refresh-token grant and
// "USERINFO" for every userinfo request.
// Users: any name, password "secret". Claims by name prefix: admin-* (groups staff, chat-admins;
// org corp), acme-* / globex-* (group customer; org acme / globex), nogroups-* (no groups),
// anyone else (groups staff, chat-users). The user "mfa-*", or any sign-in asked for
// acr_values urn:example:mfa, gets amr [pwd, otp] and acr urn:example:mfa.
import http from 'node:http';
import Provider from 'oidc-provider';

const [clientId, clientSecret, ...redirectUris] = process.argv.slice(2);
const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

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
  }],
  acrValues: ['urn:example:loa:1', 'urn:example:loa:2', 'urn:example:mfa'],
  ttl: process.env.OP_ACCESS_TTL ? { AccessToken: Number(process.env.OP_ACCESS_TTL), IdToken: Number(process.env.OP_ACCESS_TTL) } : {},
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  fetch: (url, options) => {
    // Test only: reach the proxy under test on loopback, with its development certificate.
    const Agent = options.dispatcher.constructor;
    const lookup = (hostname, opts, cb) => (opts && opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4));
    return globalThis.fetch(url, { ...options, dispatcher: new Agent({ connect: { rejectUnauthorized: false, lookup } }) });
  },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: { openid: ['sub', 'amr', 'acr', 'sid', 'auth_time'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups', 'org'] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false }, backchannelLogout: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  jwks: { keys: [await generateKey()] },
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
