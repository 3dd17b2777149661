"""/docs works offline: Swagger UI comes from Parley, and the document has the package version."""

from __future__ import annotations

from html.parser import HTMLParser
from importlib.metadata import version

import pytest
from quart.typing import TestClientProtocol as Client

pytestmark = pytest.mark.anyio


class Links(HTMLParser):
    """Every URL a page loads or links to (`src` and `href` attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_docs_load_nothing_from_outside(client: Client) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    page = await response.get_data(as_text=True)
    assert "http://" not in page
    assert "https://" not in page
    links = Links()
    links.feed(page)
    assert len(links.urls) >= 2  # Swagger UI's script and its styles
    for url in links.urls:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(await asset.get_data()) > 1000, url


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_assets_stay_inside_the_bundle(client: Client) -> None:
    assert (await client.get("/docs/static/../../../../etc/passwd")).status_code == 404
    assert (await client.get("/docs/static/no-such-file.js")).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_openapi_carries_the_package_version(client: Client) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    assert document["info"]["version"] == version("parley")
    assert not any(path.startswith("/docs") for path in document["paths"])
