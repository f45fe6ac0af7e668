// A real OpenID Provider (panva/oidc-provider) on 127.0.0.1 for Portcullis's tests.
// Usage: node op.js <client_id> <client_secret> <redirect_uri> [<redirect_uri>...]
// OP_AUTH_METHOD=client_secret_post registers the client for secrets in the request body.
// Prints "READY <issuer>" once listening. Users: any name, password "secret";
// the user "mfa-*" signs in with amr [pwd, otp]. Claims: email, name, groups.
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
  }],
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: { amr: null, acr: null, openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: false } },
  jwks: { keys: [await generateKey()] },
  cookies: { keys: ['portcullis-test-op'], names: { session: 'op_session', interaction: 'op_interaction', resume: 'op_resume' } },
  findAccount: async (ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: `${id}@corp.test`, email_verified: true, name: `User ${id}`, groups: ['staff', 'chat-users'] }),
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
server.on('request', async (req, res) => {
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
      const amr = user.startsWith('mfa-') ? ['pwd', 'otp'] : ['pwd'];
      return provider.interactionFinished(req, res, { login: { accountId: user, amr } }, { mergeWithLastSubmission: false });
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
