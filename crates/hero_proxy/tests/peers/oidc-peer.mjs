// Third-party OIDC peer for hero_proxy tests: panva's npm `oidc-provider`, configured like Forgejo
// (shared/reference/test-peers.md §1). Binds 127.0.0.1 on a free port and prints `READY <port>` when listening.
//
// Usage: node oidc-peer.mjs <redirect_uri>[,<redirect_uri>...]
// Clients: `hero-proxy` (confidential, client_secret_post, secret "peer-test-secret") and `hero-proxy-public`
// (public, PKCE only). Accounts: 1001 alice, 1002 bob, 1003 carol (chosen with login_hint, default alice), 2001
// a recreated alice (login_hint=2001).
// Counters at GET /__peer/stats: { refresh: <number of refresh_token grants>, code, outage_refused }.
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// The peers live in <repo>/tools/peers/node_modules (scripts/install-test-deps.sh); HERO_PEERS_DIR overrides.
const here = path.dirname(fileURLToPath(import.meta.url));
const peersDir = process.env.HERO_PEERS_DIR || path.resolve(here, '../../../../tools/peers');
const { default: Provider } = await import(pathToFileURL(path.join(peersDir, 'node_modules/oidc-provider/lib/index.js')).href);

const redirectUris = (process.argv[2] || 'http://127.0.0.1:1/cb').split(',');
const ACCOUNTS = {
  '1001': { preferred_username: 'alice', name: 'Alice Example', groups: ['org1', 'org1:owners'] },
  '1002': { preferred_username: 'bob', name: 'Bob Example', groups: ['org1'] },
  '1003': { preferred_username: 'carol', name: 'Carol Example', groups: [] },
  // alice's account deleted and recreated: same login, new id (login_hint=2001; the name still means 1001).
  '2001': { preferred_username: 'alice', name: 'Alice Recreated', groups: [] },
};
const BY_NAME = Object.fromEntries(Object.entries(ACCOUNTS).filter(([id]) => id !== '2001').map(([id, a]) => [a.preferred_username, id]));
const stats = { refresh: 0, code: 0, outage_refused: 0 };
// POST /__peer/outage?on=1|0: while on, the token endpoint answers 503 (an IdP outage), counted in outage_refused.
let outage = false;

const server = http.createServer();
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const port = server.address().port;
const issuer = `http://127.0.0.1:${port}`;

const common = { grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: redirectUris };
const provider = new Provider(issuer, {
  clients: [
    { ...common, client_id: 'hero-proxy', client_secret: 'peer-test-secret', token_endpoint_auth_method: 'client_secret_post' },
    { ...common, client_id: 'hero-proxy-public', token_endpoint_auth_method: 'none' },
  ],
  routes: {
    authorization: '/login/oauth/authorize', token: '/login/oauth/access_token', userinfo: '/login/oauth/userinfo',
    jwks: '/login/oauth/keys', introspection: '/login/oauth/introspect',
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups', 'read:user', 'write:repository', 'write:issue'],
  claims: {
    openid: ['sub'], profile: ['name', 'preferred_username', 'picture', 'website', 'locale', 'updated_at'],
    email: ['email', 'email_verified'], groups: ['groups'],
  },
  findAccount: async (ctx, sub) => {
    const a = ACCOUNTS[sub];
    if (!a) return undefined;
    return {
      accountId: sub,
      claims: async () => ({ sub, ...a, email: `${a.preferred_username}@example.test`, email_verified: true }),
    };
  },
  pkce: { required: () => true },
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  conformIdTokenClaims: false,
  ttl: {
    AccessToken: 3600, IdToken: 3600, RefreshToken: 730 * 3600, Grant: 730 * 3600,
    AuthorizationCode: 600, Interaction: 600, Session: 3600,
  },
  features: { devInteractions: { enabled: false }, introspection: { enabled: true } },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: ['hero-proxy-peer-test-cookie-key'] },
});
provider.proxy = false;
provider.on('grant.success', (ctx) => {
  const gt = ctx.oidc.params && ctx.oidc.params.grant_type;
  if (gt === 'refresh_token') stats.refresh += 1;
  if (gt === 'authorization_code') stats.code += 1;
});

const callback = provider.callback();
server.on('request', async (req, res) => {
  try {
    if (req.url === '/__peer/stats') {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(stats));
      return;
    }
    if (req.method === 'POST' && req.url.startsWith('/__peer/groups')) {
      // POST /__peer/groups?account=1001&groups=a,b: the account's Forge groups from now on (a team change).
      const q = new URL(req.url, issuer).searchParams;
      ACCOUNTS[q.get('account')].groups = (q.get('groups') || '').split(',').filter(Boolean);
      res.end('ok');
      return;
    }
    if (req.method === 'POST' && req.url.startsWith('/__peer/outage')) {
      outage = req.url.endsWith('on=1');
      res.end('ok');
      return;
    }
    if (outage && req.url.startsWith('/login/oauth/access_token')) {
      stats.outage_refused += 1;
      res.statusCode = 503;
      res.end('temporarily unavailable');
      return;
    }
    if (req.url.startsWith('/interaction/')) {
      const details = await provider.interactionDetails(req, res);
      const { prompt, params } = details;
      if (prompt.name === 'login') {
        const hint = params.login_hint || 'alice';
        const accountId = ACCOUNTS[hint] ? hint : BY_NAME[hint] || '1001';
        await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
        return;
      }
      if (prompt.name === 'consent') {
        let grant;
        if (details.grantId) grant = await provider.Grant.find(details.grantId);
        else grant = new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
        const d = prompt.details;
        if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
        if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
        if (d.missingResourceScopes) for (const [ind, sc] of Object.entries(d.missingResourceScopes)) grant.addResourceScope(ind, sc.join(' '));
        const grantId = await grant.save();
        await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
        return;
      }
      res.statusCode = 400;
      res.end(`unexpected prompt ${prompt.name}`);
      return;
    }
    callback(req, res);
  } catch (e) {
    res.statusCode = 500;
    res.end(String(e && e.message));
  }
});
process.stdout.write(`READY ${port}\n`);
