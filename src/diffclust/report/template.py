"""The report's single HTML page: styles and script inline, so it opens offline from disk."""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>diffclust report: {{ title }}</title>
<style>
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}h3{font-size:15px;margin:6px 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.cluster{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.names{color:#555;font-style:italic}.strip{display:flex;flex-wrap:wrap;gap:4px;margin:4px 0}
.strip figure{margin:0;text-align:center;font-size:10px;color:#666}.strip img{width:{{ thumb }}px;height:{{ thumb }}px;display:block}
img.masked{display:none}body.masks img.masked{display:block}body.masks img.plain{display:none}
.row-label{font-size:12px;color:#444;margin-top:6px}
#tooltip{position:fixed;pointer-events:none;background:#fff;border:1px solid #888;padding:4px;font-size:11px;display:none;z-index:9}
#tooltip img{width:{{ thumb }}px;height:{{ thumb }}px;display:block}
.controls{margin:8px 0;font-size:13px}.prototype{margin:4px 0;font-size:11px;color:#555}.prototype img{width:{{ 2 * thumb }}px;height:{{ 2 * thumb }}px}.warn{color:#a33}.muted{color:#777;font-size:12px}
.noimage{background:#f3f3f3;display:flex;align-items:center;justify-content:center;font-size:12px;color:#333;word-break:break-all}
.legend{font-size:12px;margin:6px 0;max-width:640px}.legend span{display:inline-block;margin:2px 10px 2px 0}.legend i{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px;vertical-align:middle}
</style></head>
<body>
<h1>diffclust report: {{ title }}</h1>
<table>{% for key, value in summary %}<tr><th class="l">{{ key }}</th><td class="l">{{ value }}</td></tr>{% endfor %}</table>
{% if notes %}<ul>{% for note in notes %}<li class="muted">{{ note }}</li>{% endfor %}</ul>{% endif %}

{% if scores %}<h2>Against the labels</h2>
<p>ACC {{ "%.2f"|format(100 * scores.acc) }}% &nbsp; NMI {{ "%.4f"|format(scores.nmi) }} &nbsp; ARI {{ "%.4f"|format(scores.ari) }}
 &nbsp; many-to-one ACC {{ "%.2f"|format(100 * scores.acc_many_to_one) }}% &nbsp; <span class="muted">({{ labelled }} labelled images; labels only score)</span></p>
{% endif %}

<h2>Map</h2>
{% if map %}<p class="muted">{{ map.caption }}</p>
<div class="controls">colour by <label><input type="radio" name="colour" value="cluster" checked> cluster</label>
{% if map.has_classes %}<label><input type="radio" name="colour" value="class"> class</label>{% endif %}</div>
<svg id="map" width="{{ map.width }}" height="{{ map.height }}" style="border:1px solid #ddd">
{% for p in map.points %}<circle class="point" cx="{{ p.x }}" cy="{{ p.y }}" r="3.2" fill="{{ p.colour }}" data-cluster-colour="{{ p.colour }}" data-class-colour="{{ p.class_colour }}" data-thumb="{{ p.thumb or '' }}" data-label="{{ p.label }}"></circle>
{% endfor %}</svg>
<div class="legend" id="legend-cluster">{% for name, colour in map.legend_clusters %}<span><i style="background:{{ colour }}"></i>{{ name }}</span>{% endfor %}</div>
{% if map.has_classes %}<div class="legend" id="legend-class" style="display:none">{% for name, colour in map.legend_classes %}<span><i style="background:{{ colour }}"></i>{{ name }}</span>{% endfor %}</div>{% endif %}
{% else %}<p class="muted">No map: {{ map_reason }}</p>{% endif %}

<h2>Clusters ({{ clusters|length }}, sorted by {{ sort }})</h2>
{% if has_masks %}<div class="controls"><label><input type="checkbox" id="masks"> show object masks (DiFiC: the loss is computed inside them)</label></div>{% endif %}
{% for c in clusters %}<div class="cluster" id="cluster-{{ c.cluster }}">
<h3>Cluster {{ c.cluster }}: {{ c.size }} images, mean confidence {{ "%.3f"|format(c.mean_confidence) }}{% if c.agreement is not none %}, samples agreeing {{ "%.0f"|format(100 * c.agreement) }}%{% endif %}
{% if c.names %}<span class="names">&mdash; {{ c.names }}</span>{% endif %}</h3>
{% if c.prototype %}<figure class="prototype"><img src="{{ c.prototype }}" alt="generated for cluster {{ c.cluster }}"><figcaption>generated from &ldquo;{{ prompt }}&rdquo;, S* = the cluster's mean proxy word</figcaption></figure>{% endif %}
{% for title, items in c.rows %}<div class="row-label">{{ title }}</div><div class="strip">
{% for item in items %}<figure title="{{ item.file }} (confidence {{ '%.3f'|format(item.confidence) }}{% if item.agreement is not none %}, samples agreeing {{ '%.0f'|format(100 * item.agreement) }}%{% endif %})">{% if item.thumb %}<img class="plain" src="{{ item.thumb }}" alt="{{ item.file }}" loading="lazy">{% if item.masked %}<img class="masked" src="{{ item.masked }}" alt="{{ item.file }} with its mask" loading="lazy">{% endif %}{% else %}<div class="noimage" style="width:{{ thumb }}px;height:{{ thumb }}px">{{ item.short }}</div>{% endif %}{% if item.thumb %}{{ item.short }}{% endif %}</figure>{% endfor %}
</div>{% endfor %}</div>{% endfor %}

{% if scores %}<h2>Clusters against the classes</h2>
<h3>Cluster by class</h3>
<table id="class-table"><tr><th class="l">cluster \ class</th>{% for name in class_names %}<th>{{ name }}</th>{% endfor %}</tr>
{% for row in class_table %}<tr><th class="l">{{ row.cluster }}</th>{% for count in row.counts %}<td>{{ count or "" }}</td>{% endfor %}</tr>{% endfor %}
<tr><th class="l">purity</th>{% for value in purity %}<td>{{ "%.2f"|format(value) }}</td>{% endfor %}</tr></table>
{% if pairs %}<h3>Most-confused class pairs</h3><table><tr><th class="l">classes</th><th>images together</th></tr>
{% for a, b, n in pairs %}<tr><td class="l">{{ a }} &amp; {{ b }}</td><td>{{ n }}</td></tr>{% endfor %}</table>{% endif %}
{% endif %}

{% if training_plot %}<h2>Training</h2><img src="{{ training_plot }}" alt="training curves" style="max-width:100%">{% endif %}
{% if k_plot %}<h2>Choosing K</h2><p class="muted">K was chosen without labels; each panel is one criterion over K (dotted: its own pick; red: the chosen K).</p><img src="{{ k_plot }}" alt="K selection" style="max-width:100%">{% endif %}
{% if search_plot %}<h2>Layer and timestep search</h2><img src="{{ search_plot }}" alt="search" style="max-width:100%">{% endif %}

{% if skipped %}<h2>Skipped ({{ skipped|length }})</h2><table><tr><th class="l">file</th><th class="l">reason</th></tr>
{% for file, reason in skipped %}<tr><td class="l">{{ file }}</td><td class="l">{{ reason }}</td></tr>{% endfor %}</table>{% endif %}
<p class="muted">Made by diffclust {{ version }}. Everything this page shows lies in this folder; it needs no network.</p>
<div id="tooltip"></div>
<script>
(function () {
  var tip = document.getElementById('tooltip');
  document.querySelectorAll('circle.point').forEach(function (point) {
    point.addEventListener('mouseenter', function (event) {
      var thumb = point.getAttribute('data-thumb');
      tip.textContent = '';  // built as nodes: a file name is text, never markup
      if (thumb) { var image = document.createElement('img'); image.src = thumb; tip.appendChild(image); }
      tip.appendChild(document.createTextNode(point.getAttribute('data-label')));
      tip.style.display = 'block';
    });
    point.addEventListener('mousemove', function (event) {
      tip.style.left = (event.clientX + 12) + 'px'; tip.style.top = (event.clientY + 12) + 'px';
    });
    point.addEventListener('mouseleave', function () { tip.style.display = 'none'; });
  });
  document.querySelectorAll('input[name=colour]').forEach(function (radio) {
    radio.addEventListener('change', function () {
      var attribute = radio.value === 'class' ? 'data-class-colour' : 'data-cluster-colour';
      document.querySelectorAll('circle.point').forEach(function (point) { point.setAttribute('fill', point.getAttribute(attribute)); });
      ['cluster', 'class'].forEach(function (kind) {
        var legend = document.getElementById('legend-' + kind);
        if (legend) { legend.style.display = kind === radio.value ? 'block' : 'none'; }
      });
    });
  });
  var masks = document.getElementById('masks');
  if (masks) { masks.addEventListener('change', function () { document.body.classList.toggle('masks', masks.checked); }); }
})();
</script>
</body></html>
"""
