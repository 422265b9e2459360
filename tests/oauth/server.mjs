// A real OpenID provider (oidc-provider, certified) on 127.0.0.1 for the
// MCP OAuth end-to-end test (tests/it/mcp_oauth.rs): dynamic client
// registration, authorization code + PKCE, resource indicators (RFC 8707)
// issuing JWT access tokens whose `aud` is the MCP resource, and a login
// and consent that grant exactly the scopes asked for, to account
// `agent-7`, without a browser.
//
//   node tests/oauth/server.mjs
//
// Prints one line, `{"issuer": "http://127.0.0.1:PORT"}`, once it listens;
// runs until killed (or its stdin closes).

import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import Provider, { errors } from 'oidc-provider';

const SCOPES = ['directory:read', 'directory:write'];
const ACCOUNT = 'agent-7';

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = { ...privateKey.export({ format: 'jwk' }), kid: 'e2e', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [signing] },
  features: {
    devInteractions: { enabled: false },
    registration: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      // Only a Tollgate MCP endpoint on loopback is a resource here.
      getResourceServerInfo: (ctx, resource) => {
        if (!/^http:\/\/127\.0\.0\.1:\d+\/mcp$/.test(resource)) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: SCOPES.join(' '),
          audience: resource,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  scopes: ['openid', 'offline_access', ...SCOPES],
  // The SDK registers with the scope of its first authorization, and a
  // client registered with a `scope` may ask for no other: a step-up
  // would be refused here before Tollgate saw it. The registered scope is
  // dropped, so a client may ask for any scope this server supports (a
  // token still holds only what was asked for and granted).
  extraClientMetadata: {
    properties: ['tollgate_e2e'],
    validator(ctx, key, value, metadata) {
      delete metadata.scope;
    },
  },
  pkce: { required: () => true },
  clientDefaults: {
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: (ctx, sub) => ({ accountId: sub, claims: () => ({ sub }) }),
});

// Login as `agent-7`, then consent to what the client asked for.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session, grantId } = details;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: ACCOUNT } }, { mergeWithLastSubmission: false });
    return;
  }
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  // Exactly what the client asked for: consent as a user who accepts.
  const { missingOIDCScope = [], missingResourceScopes = {} } = prompt.details;
  if (missingOIDCScope.length > 0) {
    grant.addOIDCScope(missingOIDCScope.join(' '));
  }
  for (const [resource, scopes] of Object.entries(missingResourceScopes)) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  const saved = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: saved } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((error) => {
      res.statusCode = 500;
      res.end(String(error));
    });
  } else {
    callback(req, res);
  }
});

process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
