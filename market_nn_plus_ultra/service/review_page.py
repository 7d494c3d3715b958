"""The HTML of ``GET /review``: one self-contained page (inline CSS and JS, no network).

Rendered by Jinja2 with autoescaping on: every value from the databases is escaped.
The form posts JSON to ``POST /review/annotations`` with the API key typed into it (sent
as the ``X-API-Key`` header, never stored).
"""

from __future__ import annotations

__all__ = ["TEMPLATE"]

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Review — Market NN Plus Ultra</title>
<style>
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1280px; padding: 20px 28px; color: #1d2330; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.15rem; border-bottom: 2px solid #e3e7ef; padding-bottom: 4px; margin-top: 1.8rem; }
.sub { color: #5b6475; margin-top: 0; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.82rem; width: 100%; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e3e7ef; text-align: left; vertical-align: top; }
th { background: #f4f6fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.breached { background: #fff6e5; }
tr.vetoed { background: #fdecec; }
.tag { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 0.75rem;
       background: #e3e7ef; margin-right: 3px; }
.tag.veto { background: #f6c4c4; } .tag.anomaly { background: #f9e1a8; }
.empty { color: #5b6475; font-style: italic; }
form { display: grid; grid-template-columns: repeat(4, minmax(140px, 1fr)); gap: 8px 12px;
       background: #f4f6fa; padding: 12px; border-radius: 6px; }
form label { display: flex; flex-direction: column; font-size: 0.8rem; color: #3a4253; }
form textarea { min-height: 3em; }
form .wide { grid-column: span 2; }
#result { font-size: 0.85rem; margin-top: 6px; }
button { padding: 6px 14px; }
</style>
</head>
<body>
<h1>Review</h1>
<p class="sub">Model in service: <strong id="model-version">{{ model_version or "none loaded" }}</strong>
 · prediction log <code>{{ database }}</code> · generated {{ generated }}</p>

<h2 id="predictions">Recent predictions ({{ predictions|length }})</h2>
{% if predictions %}
<div class="scroll"><table id="predictions-table">
<thead><tr><th>bar</th><th>symbol</th><th>model</th><th>request</th><th>position</th>
<th>model position</th><th>forecast</th><th>guardrails</th><th>breaches</th>
<th>realised</th><th>annotations</th><th></th></tr></thead>
<tbody>
{% for p in predictions %}
<tr class="prediction{% if p.breaches %} breached{% endif %}{% if p.vetoed %} vetoed{% endif %}"
    data-request-id="{{ p.request_id }}" data-symbol="{{ p.symbol }}"
    data-timestamp="{{ p.timestamp }}" data-model-version="{{ p.model_version }}">
<td>{{ p.timestamp }}</td><td>{{ p.symbol }}</td><td>{{ p.model_version }}</td>
<td><code>{{ p.request_id }}</code></td><td class="num">{{ p.position }}</td>
<td class="num">{{ p.model_position }}</td><td class="num">{{ p.forecast }}</td>
<td>{{ p.action }}</td>
<td>{% for b in p.breaches %}<div class="breach">{{ b }}</div>{% endfor %}</td>
<td class="num">{{ p.realised }}</td>
<td>{% for k in p.kinds %}<span class="tag {{ k }}">{{ k }}</span>{% endfor %}</td>
<td><button type="button" class="pick">annotate</button></td>
</tr>
{% endfor %}
</tbody></table></div>
{% else %}
<p class="empty">No prediction logged yet: POST /predict serves and logs them.</p>
{% endif %}

<h2 id="trades">Recent trades</h2>
{% if trades is none %}
<p class="empty">No trades table in the service or market database.</p>
{% elif trades %}
<div class="scroll"><table id="trades-table">
<thead><tr>{% for c in trade_columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>
{% for t in trades %}<tr class="trade">{% for c in trade_columns %}<td>{{ t[c] }}</td>{% endfor %}</tr>
{% endfor %}
</tbody></table></div>
{% else %}
<p class="empty">The trades table is empty.</p>
{% endif %}

<h2 id="annotations">Annotations ({{ annotations|length }})</h2>
{% if annotations %}
<div class="scroll"><table id="annotations-table">
<thead><tr><th>id</th><th>kind</th><th>bar</th><th>symbol</th><th>model</th><th>request</th>
<th>text</th><th>rationale</th><th>author</th><th>created</th></tr></thead>
<tbody>
{% for a in annotations %}
<tr class="annotation"><td>{{ a.annotation_id }}</td><td><span class="tag {{ a.kind }}">{{ a.kind }}</span></td>
<td>{{ a.timestamp }}</td><td>{{ a.symbol }}</td><td>{{ a.model_version }}</td>
<td><code>{{ a.request_id }}</code></td><td>{{ a.text }}</td><td>{{ a.rationale }}</td>
<td>{{ a.author }}</td><td>{{ a.created }}</td></tr>
{% endfor %}
</tbody></table></div>
{% else %}
<p class="empty">No annotation yet.</p>
{% endif %}

<h2 id="add">Add an annotation</h2>
<form id="annotate-form" autocomplete="off">
<label>request id<input name="request_id" maxlength="64"></label>
<label>symbol<input name="symbol" maxlength="32"></label>
<label>bar (ISO-8601 UTC)<input name="timestamp" maxlength="40"></label>
<label>model version<input name="model_version" maxlength="64"></label>
<label>kind<select name="kind"><option>note</option><option>anomaly</option><option>veto</option></select></label>
<label>author<input name="author" maxlength="100"></label>
<label class="wide">text<textarea name="text" maxlength="2000"></textarea></label>
<label class="wide">rationale (required for a veto)<textarea name="rationale" maxlength="2000"></textarea></label>
<label class="wide">API key<input name="api_key" type="password" autocomplete="off"></label>
<div><button type="submit">Save annotation</button></div>
</form>
<div id="result" role="status"></div>
<script>
(function () {
  var form = document.getElementById("annotate-form");
  var result = document.getElementById("result");
  document.querySelectorAll("button.pick").forEach(function (button) {
    button.addEventListener("click", function () {
      var row = button.closest("tr");
      form.request_id.value = row.dataset.requestId || "";
      form.symbol.value = row.dataset.symbol || "";
      form.timestamp.value = "";
      form.model_version.value = "";
      form.text.focus();
    });
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = {};
    ["request_id", "symbol", "timestamp", "model_version", "kind", "author", "text", "rationale"]
      .forEach(function (name) {
        var value = form[name].value.trim();
        if (value) { body[name] = value; }
      });
    fetch("{{ post_url }}", {
      method: "POST",
      headers: {"Content-Type": "application/json", "X-API-Key": form.api_key.value},
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (data) {
        if (response.ok) {
          result.textContent = "saved annotation " + data.annotation_id;
          window.location.reload();
        } else {
          result.textContent = "not saved: " + (data.detail || response.status);
        }
      });
    }).catch(function (err) { result.textContent = "not saved: " + err; });
  });
})();
</script>
</body>
</html>
"""
