// Starts Swagger UI on the API docs page (/api/docs/). drf-spectacular writes this start-up
// code into the page as an inline script, which the site's Content-Security-Policy refuses;
// here it is a static file, and what drf-spectacular would have written into the code
// (the schema's URL, SWAGGER_UI_SETTINGS, the CSRF token...) arrives as data-* attributes
// of #swagger-ui. Adapted from drf-spectacular's swagger_ui.js (BSD-3-Clause).
"use strict";

(function () {
  const root = document.getElementById("swagger-ui");
  const config = root.dataset;
  const swaggerSettings = JSON.parse(config.settings || "{}");
  const oauth2Config = JSON.parse(config.oauth2Config || "{}");
  const schemaAuthNames = JSON.parse(config.authNames || "[]");
  let schemaAuthFailed = false;
  let ui;
  const plugins = [];

  // When the schema itself needs credentials, fetch it again as they change.
  const reloadSchema = (ori) => (...args) => {
    schemaAuthFailed = false;
    setTimeout(() => ui.specActions.download());
    return ori(...args);
  };
  if (schemaAuthNames.length > 0) {
    plugins.push(() => ({
      statePlugins: {
        auth: {
          wrapActions: {authorizeOauth2: reloadSchema, authorize: reloadSchema,
                        logout: reloadSchema},
        },
      },
    }));
  }

  const isSchemaUrl = (url) =>
    ui !== undefined && url === new URL(ui.getConfigs().url, document.baseURI).href;

  const responseInterceptor = (response) => {
    if (!response.ok && isSchemaUrl(response.url)) {
      console.warn("schema request received '" + response.status +
                   "'. disabling credentials for schema till logout.");
      if (!schemaAuthFailed) {
        schemaAuthFailed = true; // only retry once, or a refusal would loop for ever
        setTimeout(() => ui.specActions.download());
      }
    }
    return response;
  };

  const injectAuthCredentials = (request) => {
    let authorized;
    if (ui !== undefined) {
      const state = ui.getState().get("auth").get("authorized");
      if (state !== undefined && Object.keys(state.toJS()).length !== 0) {
        authorized = state.toJS();
      }
    } else if (![undefined, "{}"].includes(localStorage.authorized)) {
      authorized = JSON.parse(localStorage.authorized);
    }
    if (authorized === undefined) return;
    for (const authName of schemaAuthNames) {
      const authDef = authorized[authName];
      if (authDef === undefined || authDef.schema === undefined) continue;
      const schema = authDef.schema;
      if (schema.type === "http" && schema.scheme === "bearer") {
        request.headers["Authorization"] = "Bearer " + authDef.value;
        return;
      } else if (schema.type === "http" && schema.scheme === "basic") {
        request.headers["Authorization"] =
          "Basic " + btoa(authDef.value.username + ":" + authDef.value.password);
        return;
      } else if (schema.type === "apiKey" && schema.in === "header") {
        request.headers[schema.name] = authDef.value;
        return;
      } else if (schema.type === "oauth2" && authDef.token.token_type === "Bearer") {
        request.headers["Authorization"] = "Bearer " + authDef.token.access_token;
        return;
      }
    }
  };

  const requestInterceptor = (request) => {
    if (request.loadSpec && schemaAuthNames.length > 0 && !schemaAuthFailed) {
      try {
        injectAuthCredentials(request);
      } catch (e) {
        console.error("schema auth injection failed with error: ", e);
      }
    }
    // "Try it out" with the signed-in session: Django wants the CSRF token on unsafe
    // methods. Only on same-origin requests, which carry the session anyway.
    if (!["GET", undefined].includes(request.method) && request.credentials === "same-origin") {
      request.headers[config.csrfHeader] = config.csrfToken;
    }
    return request;
  };

  // With deepLinking, Swagger UI draws each operation's path as a link inside the button
  // that opens the operation: a control in a control, which a keyboard or screen reader
  // cannot use sensibly. The path becomes plain text; opening an operation still sets its
  // #fragment in the address bar, so links to an operation keep working.
  plugins.push(() => ({
    wrapComponents: {
      DeepLink: (Original, system) => (props) =>
        system.React.createElement(Original, {...props, enabled: false}),
    },
  }));

  ui = SwaggerUIBundle({
    url: config.schemaUrl,
    dom_id: "#swagger-ui",
    presets: [SwaggerUIBundle.presets.apis],
    plugins,
    layout: "BaseLayout",
    requestInterceptor,
    responseInterceptor,
    ...swaggerSettings,
  });
  if (Object.keys(oauth2Config).length > 0) ui.initOAuth(oauth2Config);
})();
