// /docs: Swagger UI from the app's own files (no CDN), started from a file because the
// Content-Security-Policy allows no inline script. validatorUrl null: the default badge
// would call validator.swagger.io, another host.
(function () {
  "use strict";
  window.addEventListener("DOMContentLoaded", function () {
    window.ui = SwaggerUIBundle({
      url: "/openapi.json",
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis]
    });
  });
})();
