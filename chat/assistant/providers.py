"""Builds the configured provider (`ASSISTANT_PROVIDER`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from actors.provider import Provider
from chat.assistant.knowledge import KnowledgeBase, load_articles
from chat.assistant.local import LocalProvider
from chat.settings import Settings
from chat.tools.service import ToolService

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_provider(
    settings: Settings, given: Provider | None = None, tools: ToolService | None = None
) -> AsyncIterator[Provider]:
    """The provider for the settings (or `given`), closed (its HTTP client, if any) on exit.

    `tools` is the MCP tool service the provider may call while it answers.
    """
    if given is not None:
        yield given
        return
    if settings.assistant_provider == "openai":
        # Imported only when used: the SDK's types take about 2 s of CPU to import, paid by
        # every start of every worker otherwise.
        from chat.assistant.openai_provider import OpenAIProvider, host_of

        if not settings.openai_api_key:
            log.warning(
                "ASSISTANT_PROVIDER=openai without OPENAI_API_KEY: a local endpoint may need "
                "none, but api.openai.com does (model at %s)",
                host_of(settings.openai_base_url),
            )
        provider = OpenAIProvider(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key,
            model=settings.openai_model,
            timeout_s=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
            stall_s=settings.openai_stall_s,
            tools=tools,
            max_tool_rounds=settings.mcp_max_tool_rounds,
        )
        try:
            yield provider
        finally:
            await provider.close()
        return
    yield LocalProvider(
        KnowledgeBase(load_articles()),
        token_delay_s=settings.assistant_token_delay_ms / 1000,
        article_url=settings.kb_article_url,
        tools=tools,
    )


def describe_provider(provider: Provider) -> dict[str, str]:
    """Which provider answers, for readiness: the OpenAI one adds its model and host."""
    describe = getattr(provider, "describe", None)
    if callable(describe):  # the OpenAI provider: its model and host
        described: dict[str, str] = describe()
        return described
    if isinstance(provider, LocalProvider):
        return {"provider": "local"}
    return {"provider": type(provider).__name__}
