// A real OpenID Connect provider (npm `oidc-provider`, version pinned by xtask) on
// 127.0.0.1 for hive-cred-oauth's tests.
//
// Usage: node server.mjs <node_modules dir> <port>
// Prints `OIDC_READY <issuer>` once listening. Configuration:
// - one confidential native client `hive-test` / `hive-test-secret` (client_secret_basic),
//   loopback redirect http://127.0.0.1/callback (any port, RFC 8252);
// - PKCE required (S256), refresh-token rotation on, device flow and client credentials on;
// - polls of the device flow faster than the interval answer `slow_down` (see below);
// - login and consent complete over HTTP without a form: GET /interaction/<uid> logs in
//   `test-user` or grants the missing scopes and claims, so a test that follows
//   redirects (keeping cookies) plays the browser.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modules, port] = process.argv.slice(2);
const { default: Provider } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'hive-test',
    client_secret: 'hive-test-secret',
    application_type: 'native',
    redirect_uris: ['http://127.0.0.1/callback'],
    grant_types: [
      'authorization_code',
      'refresh_token',
      'client_credentials',
      'urn:ietf:params:oauth:grant-type:device_code',
    ],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'openid email offline_access api:read',
  }],
  scopes: ['openid', 'email', 'offline_access', 'api:read'],
  claims: { openid: ['sub'], email: ['email'] },
  pkce: { required: () => true },
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  issueRefreshToken: async () => true,
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() { return { sub: id, email: `${id}@example.test` }; },
    };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  ttl: { DeviceCode: 600, AccessToken: 3600, ClientCredentials: 600 },
});
provider.proxy = false;

// Interactions complete without a form: the login prompt logs in `test-user`, the
// consent prompt grants what is missing.
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path.startsWith('/interaction/')) {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    let result;
    if (details.prompt.name === 'login') {
      result = { login: { accountId: 'test-user' } };
    } else {
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({
          accountId: details.session.accountId,
          clientId: details.params.client_id,
        });
      const missing = details.prompt.details;
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      result = { consent: { grantId: await grant.save() } };
    }
    await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
    ctx.respond = false;
    return;
  }
  await next();
});

// RFC 8628 section 3.5: a client polling faster than the interval (5 s: oidc-provider
// sends none, so the default applies) gets `slow_down`. oidc-provider 9 never sends it,
// so the harness turns such a poll's `authorization_pending` into `slow_down`.
const lastPoll = new Map();
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.body && ctx.body.error === 'authorization_pending') {
    const who = ctx.get('authorization') || 'anonymous';
    const now = Date.now();
    const previous = lastPoll.get(who);
    lastPoll.set(who, now);
    if (previous !== undefined && now - previous < 5000) {
      ctx.body = { error: 'slow_down', error_description: 'polling faster than the interval' };
    }
  }
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`OIDC_READY ${issuer}`);
});
