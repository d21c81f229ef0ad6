// A real, independent OpenID provider (npm `oidc-provider`) for the gateway's auth tests.
//
// Started by the integration tests on a loopback port: `node provider.mjs` with
//   SIGNING_KEY_PEM   path of an RSA private key (PEM) it signs access tokens with
// It prints one line `{"issuer": "http://127.0.0.1:PORT"}` once it listens, then serves
// discovery, JWKS and the token endpoint. Instances (OAuth clients) get RS256 JWT access tokens
// through the client-credentials grant, for the resource `urn:ai-gateway` whose audience is
// `gitlab-ai-gateway`, carrying GitLab's claims (gitlab_realm, gitlab_instance_id, scopes,
// duo_seat_count) and `sub` = the client id, as GitLab's instance tokens do.
import http from 'node:http';
import { createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const RESOURCE = 'urn:ai-gateway';
const AUDIENCE = process.env.AUDIENCE || 'gitlab-ai-gateway';

// client id -> GitLab claims of its tokens
const INSTANCES = {
  'instance-1234': { gitlab_realm: 'saas', scopes: ['complete_code', 'generate_code'], duo_seat_count: '33' },
  'instance-5678': { gitlab_realm: 'self-managed', scopes: ['duo_chat'] },
};

const jwk = createPrivateKey(readFileSync(process.env.SIGNING_KEY_PEM)).export({ format: 'jwk' });
jwk.kid = 'oidc-provider-key-1';
jwk.alg = 'RS256';
jwk.use = 'sig';

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: Object.keys(INSTANCES).map((id) => ({
      client_id: id,
      client_secret: `${id}-secret`,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
    })),
    jwks: { keys: [jwk] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => RESOURCE,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resourceIndicator) => {
          if (resourceIndicator !== RESOURCE) {
            throw new Error(`unknown resource ${resourceIndicator}`);
          }
          return {
            scope: '',
            audience: AUDIENCE,
            accessTokenTTL: 3600,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    extraTokenClaims: (_ctx, token) => {
      const claims = INSTANCES[token.clientId];
      return claims ? { ...claims, gitlab_instance_id: token.clientId } : {};
    },
  });
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

// The tests kill this process; exit cleanly on the usual signals too.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
