// Start Swagger UI on /docs (a file rather than an inline script, so the CSP can forbid inline scripts).
"use strict";
window.SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.openapiUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
