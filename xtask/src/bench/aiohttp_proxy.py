"""Streaming reverse proxy on aiohttp: the hop the original system put in front of LLM servers.

Usage: aiohttp_proxy.py LISTEN_PORT UPSTREAM_URL. Forwards every request over a keep-alive pool and
streams the answer back chunk by chunk as it arrives, as an SSE-aware proxy must.
"""

import sys

from aiohttp import ClientSession, TCPConnector, web

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


async def handle(request):
    body = await request.read()
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    session = request.app["session"]
    url = request.app["upstream"] + request.path_qs
    async with session.request(request.method, url, headers=headers, data=body) as up:
        out = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
        resp = web.StreamResponse(status=up.status, headers=out)
        await resp.prepare(request)
        async for chunk in up.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def start_session(app):
    app["session"] = ClientSession(connector=TCPConnector(limit=0), auto_decompress=False)
    yield
    await app["session"].close()


def main():
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    app = web.Application()
    app["upstream"] = upstream
    app.cleanup_ctx.append(start_session)
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
