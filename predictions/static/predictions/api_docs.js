// The docs page: Swagger UI on the OpenAPI document, from this site's own static files.
(() => {
  "use strict";
  const element = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: element.dataset.openapiUrl,
    domNode: element,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    deepLinking: true,
    validatorUrl: null, // its default sends the document to validator.swagger.io
  });
})();
