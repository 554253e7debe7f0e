"""How the OpenAPI schema describes our two authenticators."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: `Authorization: Bearer mb_<prefix>_<secret>`.",
        }


class ConsoleSessionScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ConsoleSessionAuthentication"
    name = "ConsoleSession"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": "sessionid"}
