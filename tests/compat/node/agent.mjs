// One Vercel AI SDK agent run, exporting its spans with @opentelemetry/sdk-node over
// OTLP/HTTP (protobuf) to AgentMeter. Run by tests/compat/test_vercel_ai.py:
//   node agent.mjs '{"sdk": 6|7, "provider": "openai"|"anthropic", "api": "responses"|"chat",
//                    "streamed": bool, "baseURL": …, "tracesURL": …, "ingestKey": …,
//                    "customer": …}'
// The agent asks for the weather, calls the `weather` tool, then answers: two model calls.
import { NodeSDK } from '@opentelemetry/sdk-node';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { z } from 'zod';

const run = JSON.parse(process.argv[2]);

const sdk = new NodeSDK({
  serviceName: `vercel-ai-${run.sdk}`,
  traceExporter: new OTLPTraceExporter({
    url: run.tracesURL,
    headers: { Authorization: `Bearer ${run.ingestKey}` },
  }),
  instrumentations: [],
});
sdk.start();

async function loadAI() {
  if (run.sdk === 6) {
    return {
      ai: await import('ai6'),
      openai: (await import('ai6-openai')).createOpenAI,
      anthropic: (await import('ai6-anthropic')).createAnthropic,
    };
  }
  const ai = await import('ai');
  const { OpenTelemetry } = await import('@ai-sdk/otel');
  // usage: the reasoning and cache details GenAI semconv has no attribute for.
  // enrichSpan: AI SDK 7 puts no runtime context on spans unless asked; this names the
  // customer on every span, from the runtime context of the call.
  ai.registerTelemetry(
    new OpenTelemetry({
      usage: true,
      enrichSpan: ({ runtimeContext }) =>
        runtimeContext?.customerId ? { 'agentmeter.customer.id': runtimeContext.customerId } : undefined,
    }),
  );
  return {
    ai,
    openai: (await import('@ai-sdk/openai')).createOpenAI,
    anthropic: (await import('@ai-sdk/anthropic')).createAnthropic,
  };
}

const { ai, openai, anthropic } = await loadAI();

function model() {
  if (run.provider === 'anthropic') {
    return anthropic({ baseURL: `${run.baseURL}/v1`, apiKey: 'sk-ant-test' })('claude-opus-4-6');
  }
  const provider = openai({ baseURL: run.baseURL, apiKey: 'sk-test' });
  return run.api === 'chat' ? provider.chat('gpt-5') : provider.responses('gpt-5');
}

const weather = ai.tool({
  description: 'The weather in a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `Sunny in ${city}`,
});

// How each SDK names the customer: AI SDK 6 puts telemetry metadata on every span as
// ai.telemetry.metadata.<key> (the tenant adds that key to its customer attribute keys);
// AI SDK 7 passes the runtime context it is told to include to `enrichSpan` above.
const telemetry =
  run.sdk === 6
    ? {
        experimental_telemetry: {
          isEnabled: true,
          functionId: 'support',
          metadata: { customerId: run.customer },
        },
      }
    : {
        telemetry: { functionId: 'support', includeRuntimeContext: { customerId: true } },
        runtimeContext: { customerId: run.customer },
      };

const options = {
  model: model(),
  prompt: 'Weather in Paris?',
  tools: { weather },
  stopWhen: ai.stepCountIs(3),
  maxRetries: 0,
  ...telemetry,
};

if (run.streamed) {
  const result = ai.streamText(options);
  for await (const _ of result.textStream) {
    // drain
  }
  await result.response;
} else {
  await ai.generateText(options);
}
await sdk.shutdown();
