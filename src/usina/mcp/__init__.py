"""usina for AI agents: an MCP server (official ``mcp`` SDK) whose tools call the platform API.

Every tool is a call to usina server's REST API with the caller's token, so authorisation
(roles per project), audit entries and error messages are exactly the API's: an agent can do
what its token can do, nothing more. Modules: ``client`` (the async REST client), ``tools``
(the tool set, typed and documented), ``http`` (streamable HTTP, mounted in ``usina server``
at ``/mcp``), ``cli`` (``usina mcp``: stdio or HTTP).
"""
