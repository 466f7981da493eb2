// The API reference: Swagger UI over the API's own description.
// Swagger UI rather than Scalar or Redoc: it renders OpenAPI 3.1 under a
// Content-Security-Policy of 'self' alone (Redoc 2 injects <style> elements,
// which needs 'unsafe-inline'), it is one 1.8 MB script where Scalar's
// standalone build is 4.9 MB and fetches its fonts from fonts.scalar.com,
// and its "Try it out" calls the API with a bearer key held in memory only.
// validatorUrl null: by default it sends the document to validator.swagger.io.
window.ui = SwaggerUIBundle({
  url: "/v1/openapi.json",
  dom_id: "#reference",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: false,
});
