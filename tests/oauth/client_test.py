"""The stock MCP client signing in to Tollgate with OAuth 2.1.

Run by tests/it/mcp_oauth.rs, which starts a real authorization server
(tests/oauth/server.mjs: oidc-provider on 127.0.0.1), a real upstream and
the gateway with `agents.oauth` naming that server:

    python3 tests/oauth/client_test.py MCP_URL MODE

The Python SDK's own `OAuthClientProvider` does everything: the first MCP
request gets 401, the client discovers the Protected Resource Metadata
from `WWW-Authenticate`, then the authorization server's metadata,
registers itself, and runs the authorization code flow with PKCE and
`resource` (RFC 8707) for the scope the 401 named. Its "browser" here
follows the authorization server's redirects (login and consent answer
at once) and hands back the code. With the token it lists and calls
tools; `createEmployee` needs `directory:write`, which the first token
lacks: the 403 `insufficient_scope` makes the client step up (a second
authorization asking for both scopes) and the call then succeeds.
Prints `ok MODE` and exits 0 when everything held.
"""

import asyncio
import json
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

# Never served: the code is read from the redirect to it.
REDIRECT = "http://127.0.0.1:9/callback"


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


class Memory:
    """Token storage: in memory, for one run."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Browser:
    """Opens the authorization URL and follows the authorization server's
    redirects until it sends the user agent back to REDIRECT."""

    def __init__(self):
        self.opened = []
        self.result = None

    async def open(self, url: str) -> None:
        self.opened.append(url)
        async with httpx2.AsyncClient(follow_redirects=False, timeout=30) as http:
            for _ in range(10):
                response = await http.get(url)
                location = response.headers.get("location")
                expect(location is not None, f"no redirect from {url}: {response.status_code} {response.text[:300]}")
                url = urljoin(url, location)
                if url.startswith(REDIRECT):
                    query = parse_qs(urlparse(url).query)
                    expect("code" in query, f"no code: {url}")
                    self.result = AuthorizationCodeResult(
                        code=query["code"][0],
                        state=query.get("state", [None])[0],
                        iss=query.get("iss", [None])[0],
                    )
                    return
            raise AssertionError("the authorization server never redirected back")

    async def callback(self) -> AuthorizationCodeResult:
        expect(self.result is not None, "no authorization result")
        return self.result


def asked(url: str, name: str) -> str:
    return parse_qs(urlparse(url).query).get(name, [""])[0]


async def main(url: str, mode: str) -> None:
    browser = Browser()
    auth = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="tollgate-e2e",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=Memory(),
        redirect_handler=browser.open,
        callback_handler=browser.callback,
    )
    http = httpx2.AsyncClient(auth=auth, timeout=30)
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        expect(len(browser.opened) == 1, f"authorizations: {browser.opened}")
        first = browser.opened[0]
        expect(asked(first, "resource") == url, f"resource asked: {first}")
        # The 401's scope (the SDK adds offline_access for a refresh token).
        first_scopes = set(asked(first, "scope").split()) - {"offline_access"}
        expect(first_scopes == {"directory:read"}, f"scope asked: {first}")
        expect(asked(first, "code_challenge_method") == "S256", f"PKCE: {first}")

        tools = [t.name for t in (await client.list_tools()).tools]
        expect(tools == ["listEmployees"], f"with directory:read the client sees {tools}")
        listed = await client.call_tool("listEmployees", {"department": "R&D"})
        expect(not listed.is_error, f"listEmployees failed: {listed}")
        expect(json.loads(listed.content[0].text)["uri"] == "/?department=R%26D", f"{listed}")

        # Needs directory:write: 403 insufficient_scope, then step-up.
        created = await client.call_tool("createEmployee", {"body": {"name": "Ada"}})
        expect(not created.is_error, f"createEmployee after step-up failed: {created}")
        expect(len(browser.opened) == 2, f"authorizations: {browser.opened}")
        scopes = set(asked(browser.opened[1], "scope").split()) - {"offline_access"}
        expect(scopes == {"directory:read", "directory:write"}, f"step-up asked for {scopes}")

        tools = [t.name for t in (await client.list_tools()).tools]
        expect(tools == ["listEmployees", "createEmployee"], f"after step-up the client sees {tools}")

    print(f"ok {mode}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:3]))
