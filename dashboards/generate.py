#!/usr/bin/env python3
"""Writes the Grafana dashboards (dashboards/*.json) from the panel lists below.

The JSON files are committed (Grafana and the compose stack read them as they are); this script
is their source. `python3 dashboards/generate.py` rewrites them, `--check` fails when a committed
file differs from what the script produces (tests/dashboards.rs runs it).

Every panel reads only families the agent registers today (docs/metrics.md) or Prometheus's own
per-target series (`up`, `scrape_*`). Every query goes through the `${datasource}` variable; no
datasource uid is written anywhere. Template variables: `node` (the scrape target, `instance`),
`api` (provider), `model`, `process`, `namespace`, `pod`, `container`, and `peer` for the client view.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# Label matchers shared by the panels of one dashboard.
# Where the process runs: empty outside containers (the cAdvisor convention), which "All" (.*)
# and a variable without values both match.
PLACE = 'namespace=~"$namespace", pod=~"$pod", container=~"$container"'
SERVER = 'instance=~"$node", api=~"$api", model=~"$model", process=~"$process", ' + PLACE
CLIENT = 'instance=~"$node", api=~"$api", model=~"$model", process=~"$process", peer=~"$peer", ' + PLACE
CLIENT_MCP = 'instance=~"$node", process=~"$process", peer=~"$peer", ' + PLACE
NODE = 'instance=~"$node"'


def datasource_var():
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_var(name, label, query, multi=True):
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "definition": query,
        "refresh": 2,
        "includeAll": multi,
        "multi": multi,
        "allValue": ".*" if multi else None,
        "current": {},
        "hide": 0,
        "sort": 1,
        "regex": "",
        "options": [],
    }


def target(expr, legend="", ref="A", instant=False, fmt="time_series"):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend, "range": not instant,
         "instant": instant, "format": fmt}
    return t


def quantiles(family, matchers, by, qs=(0.5, 0.9, 0.99)):
    """histogram_quantile targets, one per quantile, split `by` (plus le)."""
    out = []
    by_le = ", ".join([*by, "le"])
    for i, q in enumerate(qs):
        legend = " ".join("{{%s}}" % b for b in by)
        out.append(target(
            f"histogram_quantile({q}, sum by ({by_le}) (rate({family}_bucket{{{matchers}}}[{RATE}])))",
            f"{legend} p{round(q * 100)}".strip(),
            chr(ord("A") + i),
        ))
    return out


def ts(title, description, targets, unit="short", stack=False):
    return {"type": "timeseries", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit, "custom": {"stacking": {"mode": "normal" if stack else "none"}}},
                            "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}}


def stat(title, description, targets, unit="short"):
    return {"type": "stat", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                        "colorMode": "value", "graphMode": "area"}}


def table(title, description, targets, unit="short"):
    return {"type": "table", "title": title, "description": description, "targets": targets,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"showHeader": True},
            "transformations": [{"id": "merge", "options": {}},
                                {"id": "organize", "options": {"excludeByName": {"Time": True}}}]}


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def layout(items):
    """Assigns ids and gridPos: a row spans the width; panels flow three to a line (8 wide, 8 high),
    a table takes the full width."""
    panels, y, x, pid = [], 0, 0, 1
    for item in items:
        if item["type"] == "row":
            if x:
                y, x = y + 8, 0
            item["gridPos"] = {"x": 0, "y": y, "w": 24, "h": 1}
            y += 1
        else:
            w = 24 if item["type"] == "table" else 8
            if x + w > 24:
                y, x = y + 8, 0
            item["gridPos"] = {"x": x, "y": y, "w": w, "h": 8}
            item["datasource"] = DS
            x += w
        item["id"] = pid
        pid += 1
        panels.append(item)
    return panels


def dashboard(uid, title, description, tags, variables, items):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["llm-observer", *tags],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["llm-observer"], "title": "llm-observer", "asDropdown": True}],
        "templating": {"list": [datasource_var(), *variables]},
        "panels": layout(items),
    }


def node_var():
    return query_var("node", "Node", "label_values(llm_observer_build_info, instance)")


def place_vars(family):
    """Namespace, pod and container of the processes in `family` (Kubernetes and compose)."""
    return [
        query_var("namespace", "Namespace", f'label_values({family}{{instance=~"$node"}}, namespace)'),
        query_var("pod", "Pod", f'label_values({family}{{instance=~"$node", namespace=~"$namespace"}}, pod)'),
        query_var("container", "Container", f'label_values({family}{{instance=~"$node", namespace=~"$namespace", pod=~"$pod"}}, container)'),
    ]


def inference():
    vars_ = [
        node_var(),
        query_var("api", "Provider (API)", 'label_values(llm_requests_total{instance=~"$node"}, api)'),
        query_var("model", "Model", 'label_values(llm_requests_total{instance=~"$node", api=~"$api"}, model)'),
        query_var("process", "Server process", 'label_values(llm_requests_total{instance=~"$node", api=~"$api"}, process)'),
        *place_vars("llm_requests_total"),
    ]
    s = SERVER
    items = [
        row("Traffic"),
        ts("Requests/s by status", "Finished requests (completed or failed) per second, by HTTP status class (none: no response).",
           [target(f"sum by (status) (rate(llm_requests_total{{{s}}}[{RATE}]))", "{{status}}")], "reqps", stack=True),
        ts("Error ratio by type", "Failed requests of each error type over all finished requests.",
           [target(f"sum by (type) (rate(llm_inference_errors_total{{{s}}}[{RATE}])) / ignoring (type) group_left sum(rate(llm_requests_total{{{s}}}[{RATE}]))", "{{type}}")],
           "percentunit", stack=True),
        ts("Requests/s by model", "Finished requests per second per model and API.",
           [target(f"sum by (api, model) (rate(llm_requests_total{{{s}}}[{RATE}]))", "{{api}} {{model}}")], "reqps"),
        row("Tokens"),
        ts("Tokens/s: prompt vs response, by model", "Prompt (input) and response (output) tokens per second; reported by the server or counted from stream events.",
           [target(f"sum by (model) (rate(llm_prompt_tokens_total{{{s}}}[{RATE}]))", "{{model}} prompt", "A"),
            target(f"sum by (model) (rate(llm_response_tokens_total{{{s}}}[{RATE}]))", "{{model}} response", "B")], "short"),
        ts("Output tokens/s (agent window)", "llm_tokens_per_second: output tokens spread over each request's generation interval, averaged over the agent's window (default 30 s).",
           [target('sum by (model) (llm_tokens_per_second{instance=~"$node", model=~"$model", process=~"$process"})', "{{model}}")], "short"),
        ts("Token-count provenance", "Share of requests whose token count was reported by the server, counted from stream events, or absent (the token families miss those).",
           [target(f"sum by (token_type, source) (rate(llm_token_usage_source_total{{{s}}}[{RATE}])) / ignoring (source) group_left sum by (token_type) (rate(llm_token_usage_source_total{{{s}}}[{RATE}]))", "{{token_type}} {{source}}")],
           "percentunit"),
        row("Latency"),
        ts("Latency p50 / p90 / p99", "Successful requests, first request byte to last response byte (kernel capture times), over the selected models.",
           quantiles("llm_inference_latency_seconds", s, []), "s"),
        ts("Time to first token p50 / p90 / p99", "Streaming requests: first content-bearing event minus first request byte.",
           quantiles("llm_time_to_first_token_seconds", s, []), "s"),
        ts("Time per output token p50 / p90 / p99", "Streaming requests with at least 2 output tokens.",
           quantiles("llm_time_per_output_token_seconds", s, []), "s"),
        ts("Latency p90 by model", "Successful requests' p90 latency per model.",
           quantiles("llm_inference_latency_seconds", s, ["model"], qs=(0.9,)), "s"),
        ts("Decode speed p50 by model", "Streaming requests: (output tokens - 1) / (last - first token event).",
           quantiles("llm_decode_tokens_per_second", s, ["model"], qs=(0.5,)), "short"),
        ts("Mean time per output token by model", "Sum over count of the TPOT histogram.",
           [target(f"sum by (model) (rate(llm_time_per_output_token_seconds_sum{{{s}}}[{RATE}])) / sum by (model) (rate(llm_time_per_output_token_seconds_count{{{s}}}[{RATE}]))", "{{model}}")], "s"),
        row("Load and memory"),
        ts("Active requests", "Requests received whose response has not finished, per server process.",
           [target(f"sum by (process) (llm_active_requests{{{s}}})", "{{process}}")], "short"),
        ts("Queue (no first token yet)", "In-flight requests still waiting for their first content-bearing event (queued or prefilling).",
           [target(f"sum by (process) (llm_queue_size{{{s}}})", "{{process}}")], "short"),
        stat("OOM kills in range", "Observed server processes killed by the kernel's OOM killer; their in-flight requests count as out_of_memory errors.",
             [target('sum by (process) (increase(llm_oom_kills_total{instance=~"$node", process=~"$process"}[$__range]))', "{{process}}", "A", True)]),
        ts("Server memory (RSS)", "VmRSS of the processes that served LLM requests, per process name.",
           [target('sum by (process) (llm_memory_usage_bytes{instance=~"$node", process=~"$process"})', "{{process}}")], "bytes"),
        row("Containers and GPUs"),
        ts("Requests/s by namespace, pod and container", "Server-view requests per second per Kubernetes namespace/pod and container (empty outside containers, the cAdvisor convention).",
           [target(f"sum by (namespace, pod, container) (rate(llm_requests_total{{{s}}}[{RATE}]))", "{{namespace}}/{{pod}} {{container}}")], "reqps"),
        ts("GPU memory by serving unit", "GPU memory held by each serving unit's processes (the server, its descendants and its container), per GPU (NVML per-process accounting).",
           [target('sum by (gpu, namespace, pod, container, process) (llm_gpu_memory_used_bytes{instance=~"$node", process=~"$process"})', "{{gpu}} {{namespace}}/{{pod}} {{container}} {{process}}")], "bytes"),
        ts("GPU utilization by serving unit", "SM utilization of each serving unit's processes, per GPU (0 to 1; absent on MIG).",
           [target('sum by (gpu, namespace, pod, container, process) (llm_gpu_utilization_ratio{instance=~"$node", process=~"$process"})', "{{gpu}} {{namespace}}/{{pod}} {{container}} {{process}}")], "percentunit"),
        ts("GPU devices: memory used / total", "Per GPU: memory used and total; dcgm-exporter's DCGM_FI_DEV_FB_USED (MiB) is the same reading where it runs.",
           [target('sum by (gpu) (llm_gpu_device_memory_used_bytes{instance=~"$node"})', "{{gpu}} used", "A"),
            target('sum by (gpu) (llm_gpu_device_memory_total_bytes{instance=~"$node"})', "{{gpu}} total", "B")], "bytes"),
        ts("GPU devices: utilization and power", "Per GPU: utilization (0 to 1) and power draw (watts).",
           [target('sum by (gpu) (llm_gpu_device_utilization_ratio{instance=~"$node"})', "{{gpu}} utilization", "A"),
            target('sum by (gpu) (llm_gpu_power_watts{instance=~"$node"})', "{{gpu}} W", "B")], "short"),
        ts("Energy per output token", "Joules the node's GPUs used per output token generated on the node (both rates over the same window).",
           [target(f'sum(rate(llm_gpu_energy_joules_total{{instance=~"$node"}}[{RATE}])) / sum(rate(llm_tokens_generated_total{{instance=~"$node"}}[{RATE}]))', "J/token")], "short"),
        ts("Server memory: RSS and GPU", "llm_memory_usage_bytes by type: rss (VmRSS) and gpu (GPU memory of the serving unit, all GPUs).",
           [target('sum by (process, type) (llm_memory_usage_bytes{instance=~"$node", process=~"$process"})', "{{process}} {{type}}")], "bytes"),
        row("Models"),
        table("Model load times", "Server-reported load time (Ollama load_duration) of explicit loads and of requests whose load took at least 0.1 s: loads and mean since the agent started, p90 in the range.",
              [target(f"sum by (model) (llm_model_load_time_seconds_count{{{s}}})", "", "A", True, "table"),
               target(f"sum by (model) (llm_model_load_time_seconds_sum{{{s}}}) / sum by (model) (llm_model_load_time_seconds_count{{{s}}})", "", "B", True, "table"),
               target(f"histogram_quantile(0.9, sum by (model, le) (rate(llm_model_load_time_seconds_bucket{{{s}}}[$__range])))", "", "C", True, "table")],
              "s"),
    ]
    return dashboard("llm-inference", "LLM Inference",
                     "Server view: what LLM servers on the selected nodes served (llm_* families).",
                     ["llm", "inference"], vars_, items)


def agents():
    vars_ = [
        node_var(),
        query_var("process", "Agent process",
                  'label_values({__name__=~"llm_client_requests_total|llm_client_mcp_requests_total", instance=~"$node"}, process)'),
        query_var("api", "Provider (API)", 'label_values(llm_client_requests_total{instance=~"$node", process=~"$process"}, api)'),
        query_var("model", "Model", 'label_values(llm_client_requests_total{instance=~"$node", process=~"$process", api=~"$api"}, model)'),
        query_var("peer", "Peer (server)",
                  'label_values({__name__=~"llm_client_requests_total|llm_client_mcp_requests_total", instance=~"$node", process=~"$process"}, peer)'),
        *place_vars("llm_client_requests_total"),
    ]
    c, m = CLIENT, CLIENT_MCP
    items = [
        row("LLM calls"),
        ts("Calls/s by agent process and provider", "LLM API requests sent by each observed process, per provider (from the request's host: openai, anthropic, gemini, ..., self_hosted) and API.",
           [target(f"sum by (process, provider, api) (rate(llm_client_requests_total{{{c}}}[{RATE}]))", "{{process}} {{provider}} ({{api}})")], "reqps"),
        ts("Calls/s by model", "LLM API requests sent, per model and peer.",
           [target(f"sum by (model, peer) (rate(llm_client_requests_total{{{c}}}[{RATE}]))", "{{model}} → {{peer}}")], "reqps"),
        ts("Failed calls/s by type", "Client requests that failed, by error type.",
           [target(f"sum by (process, type) (rate(llm_client_errors_total{{{c}}}[{RATE}]))", "{{process}} {{type}}")], "reqps", stack=True),
        ts("Tokens/s by agent process", "Prompt and response tokens of the calls each process made.",
           [target(f"sum by (process) (rate(llm_client_prompt_tokens_total{{{c}}}[{RATE}]))", "{{process}} prompt", "A"),
            target(f"sum by (process) (rate(llm_client_response_tokens_total{{{c}}}[{RATE}]))", "{{process}} response", "B")], "short"),
        ts("Client latency p50 / p90 / p99", "Successful calls, measured at the calling process (includes the network to the server).",
           quantiles("llm_client_latency_seconds", c, ["process"]), "s"),
        ts("Client time to first token p50 / p90", "Streaming calls, at the calling process.",
           quantiles("llm_client_time_to_first_token_seconds", c, ["process"], qs=(0.5, 0.9)), "s"),
        ts("Calls in flight", "Requests each process has sent whose response has not finished.",
           [target(f"sum by (process, peer) (llm_client_active_requests{{{c}}})", "{{process}} → {{peer}}")], "short"),
        table("Tokens by agent and model (range)", "Prompt and response tokens of each process's calls in the selected range.",
              [target(f"sum by (process, model) (increase(llm_client_prompt_tokens_total{{{c}}}[$__range]))", "", "A", True, "table"),
               target(f"sum by (process, model) (increase(llm_client_response_tokens_total{{{c}}}[$__range]))", "", "B", True, "table")]),
        row("Tool calls asked by the model"),
        ts("Tool calls/s (client view)", "Tool calls the model asked the observed client to make, by tool name.",
           [target(f"sum by (process, tool) (rate(llm_client_tool_calls_total{{{c}}}[{RATE}]))", "{{process}} {{tool}}")], "short"),
        ts("Tool calls/s (server view)", "Tool calls the model asked for in responses the observed servers sent.",
           [target(f"sum by (process, tool) (rate(llm_tool_calls_total{{{NODE}, model=~\"$model\"}}[{RATE}]))", "{{process}} {{tool}}")], "short"),
        row("MCP (client view: the agents calling tools)"),
        ts("MCP calls/s by method", "MCP JSON-RPC requests sent, by method.",
           [target(f"sum by (process, method) (rate(llm_client_mcp_requests_total{{{m}}}[{RATE}]))", "{{process}} {{method}}")], "reqps"),
        ts("MCP tool calls/s by tool and outcome", "tools/call requests by tool and error (none: success).",
           [target(f"sum by (tool, error) (rate(llm_client_mcp_requests_total{{{m}, method=\"tools/call\"}}[{RATE}]))", "{{tool}} {{error}}")], "reqps", stack=True),
        ts("MCP error ratio by method", "MCP requests with an error (JSON-RPC error, tool error, transport) over all MCP requests, per method.",
           [target(f"sum by (method) (rate(llm_client_mcp_requests_total{{{m}, error!=\"none\"}}[{RATE}])) / sum by (method) (rate(llm_client_mcp_requests_total{{{m}}}[{RATE}]))", "{{method}}")],
           "percentunit"),
        ts("Tool execution time p50 / p90 (tools/call)", "MCP tools/call requests, last response byte minus first request byte, at the calling process.",
           quantiles("llm_client_mcp_duration_seconds", f'{m}, method="tools/call"', ["process"], qs=(0.5, 0.9)), "s"),
        ts("MCP latency p90 by method", "All MCP requests sent, per method.",
           quantiles("llm_client_mcp_duration_seconds", m, ["method"], qs=(0.9,)), "s"),
        row("MCP (server view: the tool servers)"),
        ts("MCP requests served/s by method and outcome", "MCP requests observed servers answered, by method and error (none: success).",
           [target(f"sum by (process, method, error) (rate(llm_mcp_requests_total{{{NODE}}}[{RATE}]))", "{{process}} {{method}} {{error}}")], "reqps"),
        ts("MCP tools served/s", "tools/call requests served, by tool and error.",
           [target(f"sum by (process, tool, error) (rate(llm_mcp_requests_total{{{NODE}, method=\"tools/call\"}}[{RATE}]))", "{{process}} {{tool}} {{error}}")], "reqps"),
        ts("MCP server latency p90 by method", "MCP requests served, per method.",
           quantiles("llm_mcp_request_duration_seconds", NODE, ["method"], qs=(0.9,)), "s"),
    ]
    return dashboard("llm-agents-tools", "LLM Agents & Tools",
                     "Client view: what observed processes (agents, apps) asked of LLM APIs and MCP servers (llm_client_* and llm_mcp_* families).",
                     ["llm", "agents", "mcp"], vars_, items)


def health():
    vars_ = [
        query_var("job", "Job", "label_values(llm_observer_build_info, job)"),
        query_var("node", "Node", 'label_values(llm_observer_build_info{job=~"$job"}, instance)'),
    ]
    n = 'job=~"$job", instance=~"$node"'
    items = [
        row("Agents"),
        stat("Agents up", "Scrape targets of the agent's job answering (1) or not (0).",
             [target(f"up{{{n}}}", "{{instance}}")]),
        table("Build info", "Agent version and attach mode per node.",
              [target(f"max by (instance, version, attach_mode) (llm_observer_build_info{{{n}}})", "", "A", True, "table")]),
        ts("Scrape duration and series", "How long Prometheus takes to scrape each agent, and how many samples it returns (the agent's cardinality).",
           [target(f"scrape_duration_seconds{{{n}}}", "{{instance}} duration", "A"),
            target(f"scrape_samples_scraped{{{n}}}", "{{instance}} samples", "B")], "short"),
        row("Capture"),
        ts("Events/s by kind", "Events read from the kernel ring buffer.",
           [target(f"sum by (instance, kind) (rate(llm_observer_events_total{{{n}}}[{RATE}]))", "{{instance}} {{kind}}")], "short", stack=True),
        ts("Lost events/s", "Events the kernel dropped because the ring buffer was full: raise --ring-bytes when not 0.",
           [target(f"sum by (instance) (rate(llm_observer_lost_events_total{{{n}}}[{RATE}]))", "{{instance}}")], "short"),
        ts("Captured and truncated bytes/s", "Payload bytes copied from the kernel by direction, and bytes not copied because a syscall exceeded --max-capture-bytes.",
           [target(f"sum by (instance, direction) (rate(llm_observer_captured_bytes_total{{{n}}}[{RATE}]))", "{{instance}} {{direction}}", "A"),
            target(f"sum by (instance) (rate(llm_observer_truncated_bytes_total{{{n}}}[{RATE}]))", "{{instance}} truncated", "B"),
            target(f"sum by (instance) (rate(llm_observer_other_protocol_bytes_total{{{n}}}[{RATE}]))", "{{instance}} not HTTP/1.x", "C")],
           "Bps"),
        row("Decoding"),
        ts("Decode errors/s by reason", "Bytes or messages that could not be decoded.",
           [target(f"sum by (instance, reason) (rate(llm_observer_decode_errors_total{{{n}}}[{RATE}]))", "{{instance}} {{reason}}")], "short", stack=True),
        ts("Dropped work/s by stage", "Events shed by a bounded internal queue or a full table.",
           [target(f"sum by (instance, stage) (rate(llm_observer_dropped_total{{{n}}}[{RATE}]))", "{{instance}} {{stage}}")], "short", stack=True),
        ts("Incomplete exchanges/s by view and reason", "Exchanges the capture could not see whole (bytes lost, connection forgotten, undecodable): counted here and in no llm_* family.",
           [target(f"sum by (instance, view, reason) (rate(llm_observer_incomplete_exchanges_total{{{n}}}[{RATE}]))", "{{instance}} {{view}} {{reason}}")], "short", stack=True),
        ts("Exchanges decoded/s by API", "Request/response pairs decoded, server and client views together.",
           [target(f"sum by (instance, api) (rate(llm_observer_exchanges_total{{{n}}}[{RATE}]))", "{{instance}} {{api}}")], "short", stack=True),
        row("Connections"),
        ts("Connections tracked", "TCP connections currently in the connection table.",
           [target(f"sum by (instance) (llm_observer_connections_tracked{{{n}}})", "{{instance}}")], "short"),
        ts("Connections/s by role", "TCP connections starting to be tracked (server: accepted, client: connected).",
           [target(f"sum by (instance, role) (rate(llm_observer_connections_total{{{n}}}[{RATE}]))", "{{instance}} {{role}}")], "short"),
        ts("Unsupported connections/s", "Connections recognised but not decoded (HTTP/2, upgrades, CONNECT).",
           [target(f"sum by (instance, kind) (rate(llm_observer_unsupported_total{{{n}}}[{RATE}]))", "{{instance}} {{kind}}")], "short"),
    ]
    return dashboard("llm-observer-health", "llm-observer health",
                     "The agent itself: capture volume, losses, decode errors, shed work, connections, build info (llm_observer_* families).",
                     ["health"], vars_, items)


DASHBOARDS = {"llm-inference.json": inference, "llm-agents-tools.json": agents, "llm-observer-health.json": health}


def main(argv):
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"dashboards out of date (run python3 dashboards/generate.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
