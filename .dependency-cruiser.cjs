/**
 * The agent's layers, lowest first: a folder may import its own files and those of the layers
 * below it, never one above (`npm run lint` checks it, and CI runs that). The web page is its
 * own world: it may use the typed client's types and nothing else of the agent.
 *
 *   core       errors, logger, small file and JSON helpers (and version.ts)
 *   client     the typed client of the SAM API and the types of its answers
 *   config     the settings schema and loading
 *   model      model folders, manifests, onnxruntime sessions
 *   segment    preprocessing, prompts, the engine, Everything mode, mask formats
 *   capture    frame sources and the camera interface
 *   dataset    the annotation store and its exports
 *   service    the segmentation service: queue, worker, routing (local or cloud), model updates, results
 *   mqtt http  the transports
 *   daemon     the composition root and its features
 *   cli.ts     the command line, and its commands (commands/)
 */
const LAYERS = [["core", "version.ts"], ["client"], ["config"], ["model"], ["segment"], ["capture"], ["dataset"], ["service"], ["mqtt", "http"], ["daemon"], ["cli.ts", "commands"]];
const path = (names) => `^agent/src/(${names.join("|").replace(/\./g, "\\.")})($|/)`;

module.exports = {
  forbidden: [
    ...LAYERS.flatMap((layer, i) => {
      const above = LAYERS.slice(i + 1).flat();
      return above.length === 0
        ? []
        : [
            {
              name: `no-upward-import-from-${layer.join("-")}`,
              comment: `${layer.join(", ")} may not import ${above.join(", ")} (a higher layer)`,
              severity: "error",
              from: { path: path(layer) },
              to: { path: path(above) },
            },
          ];
    }),
    {
      name: "no-cycles",
      comment: "no import cycle, at any length",
      severity: "error",
      from: { path: "^agent/src" },
      to: { circular: true },
    },
    {
      name: "web-page-only-uses-client-types",
      comment: "the browser page is bundled on its own: it may import the client's types only",
      severity: "error",
      from: { path: "^agent/src/web" },
      to: { path: "^agent/src/(?!web|client)" },
    },
    {
      name: "agent-never-imports-tests-or-benches",
      severity: "error",
      from: { path: "^agent/" },
      to: { path: "^(test|bench)/" },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: { extensions: [".ts", ".js"] },
  },
};
