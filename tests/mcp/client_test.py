"""A stock MCP client against Tollgate's MCP endpoint.

Run by tests/it/mcp.rs (which starts the gateway and a real upstream):

    python3 tests/mcp/client_test.py URL READER_KEY OUTSIDER_KEY MODE

MODE is the SDK's connect mode: `legacy` (the initialize handshake and a
session) or `auto` (the SDK probes `server/discover` and stays on the
stateless 2026-07-28 revision). The reader lists and calls tools; its
second `createEmployee` within the minute is rate limited; the outsider
lacks the `reader` role, so it is not shown `getEmployee` and calling it
anyway is refused. Both refusals must be tool errors carrying the
problem's `code`. Prints `ok MODE` and exits 0 when everything held.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def connect(url: str, key: str, mode: str) -> Client:
    http = httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=30)
    return Client(streamable_http_client(url, http_client=http), mode=mode)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def refusal_code(result) -> str:
    expect(result.is_error, f"expected a tool error, got {result}")
    return json.loads(result.content[0].text)["code"]


async def main(url: str, reader_key: str, outsider_key: str, mode: str) -> None:
    async with connect(url, reader_key, mode) as reader:
        if mode == "auto":
            expect(reader.protocol_version == "2026-07-28", f"auto mode settled on {reader.protocol_version}")
        else:
            expect(reader.protocol_version == "2025-11-25", f"legacy mode settled on {reader.protocol_version}")
        tools = [t.name for t in (await reader.list_tools()).tools]
        expect(tools == ["listEmployees", "getEmployee", "createEmployee"], f"reader sees {tools}")

        got = await reader.call_tool("getEmployee", {"employeeId": "42"})
        expect(not got.is_error, f"getEmployee failed: {got}")
        expect(got.structured_content["uri"] == "/42", f"structured content: {got.structured_content}")

        created = await reader.call_tool("createEmployee", {"body": {"name": "Ada"}})
        expect(not created.is_error, f"createEmployee failed: {created}")
        again = await reader.call_tool("createEmployee", {"body": {"name": "Grace"}})
        expect(refusal_code(again) == "rate_limited", f"second create: {again}")

    async with connect(url, outsider_key, mode) as outsider:
        tools = [t.name for t in (await outsider.list_tools()).tools]
        expect(tools == ["listEmployees", "createEmployee"], f"outsider sees {tools}")
        refused = await outsider.call_tool("getEmployee", {"employeeId": "42"})
        expect(refusal_code(refused) == "forbidden_role", f"outsider's getEmployee: {refused}")

    print(f"ok {mode}")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
