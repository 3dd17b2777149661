"""Parley's own MCP server of support tools, over stdio: `parley mcp-server`.

Configured by default in the tool service (chat/tools/config.py), which passes it everything
it needs in its environment: DATABASE_URL, PARLEY_TOOLS_SECRET (to verify who each call acts
for, chat/tools/identity.py), PARLEY_VAR_DIR, LOG_LEVEL, KB_ARTICLE_URL. Tool results are
structured content (JSON objects). The ticket tools are registered by
`chat/tools/ticket_tools.py`. Nothing may be written to stdout but the protocol.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

import anyio
from mcp.server.mcpserver import MCPServer

from chat.assistant.knowledge import KnowledgeBase, load_articles
from chat.tools.identity import TOOLS_SECRET_ENV, derive_tools_secret

if TYPE_CHECKING:
    from chat.settings import Settings

NAME = "parley"
SEARCH_LIMIT = 3
# Enough of an article for a model to answer from it, not the whole knowledge base.
MAX_ARTICLE_TEXT = 1500
INSTRUCTIONS = (
    "Support tools of Parley: search the help-centre articles; create, list and read the "
    "customer's support tickets (the customer is the conversation's owner, never an argument)."
)


def search_articles(
    knowledge: KnowledgeBase, query: str, article_url: str, limit: int = SEARCH_LIMIT
) -> dict[str, Any]:
    """The best matching articles for `query`: what `search_knowledge_base` returns."""
    matches = knowledge.rank(query)[: max(1, limit)]
    return {
        "query": query,
        "articles": [
            {
                "slug": m.article.slug,
                "title": m.article.title,
                "url": article_url.format(slug=m.article.slug),
                "confidence": round(m.confidence, 3),
                "text": m.article.body[:MAX_ARTICLE_TEXT],
            }
            for m in matches
        ],
    }


def tools_secret(settings: Settings) -> str:
    """The secret acting tokens are signed with: given by the service, else derived here."""
    return os.environ.get(TOOLS_SECRET_ENV) or derive_tools_secret(settings.jwt_secret)


def build_server(settings: Settings, knowledge: KnowledgeBase | None = None) -> MCPServer:
    knowledge = knowledge or KnowledgeBase(load_articles())
    server: MCPServer = MCPServer(NAME, instructions=INSTRUCTIONS, log_level=settings.log_level)

    @server.tool()
    def search_knowledge_base(query: str) -> dict[str, Any]:
        """Search Parley's help-centre articles; the best matches with their text and URL."""
        return search_articles(knowledge, query, settings.kb_article_url)

    # The ticket tools (chat/tools/ticket_tools.py), when that module is there.
    if importlib.util.find_spec("chat.tools.ticket_tools") is not None:
        importlib.import_module("chat.tools.ticket_tools").register(server, settings)
    return server


def run(settings: Settings) -> int:
    """Serve on stdin/stdout until stdin closes (the tool service stopped the server)."""
    anyio.run(build_server(settings).run_stdio_async)
    return 0
