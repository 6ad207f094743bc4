import asyncio
import signal

import httpx
import numpy as np
from PIL import Image

from tests.service.conftest import encode_image, fmnist_images, post_concurrently


def test_sigterm_turns_readiness_off_and_finishes_in_flight_requests(start_server):
    server = start_server(PURIFIER_SHUTDOWN_DRAIN_S="1.0")
    tile = np.asarray(fmnist_images(1)[0])
    big = encode_image(Image.fromarray(np.tile(tile, (12, 12))), "PNG")  # 4 tiles each

    async def scenario() -> tuple[list, int]:
        in_flight = asyncio.create_task(post_concurrently(server.url, [big] * 6))
        await asyncio.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient() as client:
            ready = (await client.get(f"{server.url}/v2/health/ready")).status_code
        return await in_flight, ready

    responses, ready_status = asyncio.run(scenario())
    assert ready_status == 503
    assert [r.status_code for r in responses] == [200] * 6
    # uvicorn finishes its graceful shutdown, then re-raises the captured SIGTERM.
    assert server.proc.wait(30) in (0, -signal.SIGTERM)
    log = server.log.read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log
