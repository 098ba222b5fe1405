package charttest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/amber-backup/amber/conformance/testbed"
)

// promtool runs Prometheus' promtool (conformance/tools/promtool) in dir and
// fails the test, with its output, when it exits non-zero.
func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(testbed.Tool(t, "promtool"), args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func writeYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Series as Prometheus stores them after scraping with the chart's PodMonitor
// (sidecars: namespace and pod from the target, policy from the pod's
// amber.dev/policy annotation) and ServiceMonitor (amber-controller's drill
// metrics, honorLabels keeping the policy's namespace).
func sidecarSeries(metric, ns, policy, pod, extra string) string {
	return fmt.Sprintf(`%s{namespace=%q, policy=%q, pod=%q, container="amber-sidecar", endpoint="amber-api", job="amber/amber-sidecars", instance="%s.%s:9090"%s}`,
		metric, ns, policy, pod, pod, ns, extra)
}

func controllerSeries(metric, ns, policy string) string {
	return fmt.Sprintf(`%s{namespace=%q, policy=%q, pod="amber-controller-7d9f-abcde", container="controller", endpoint="metrics", service="amber", job="amber", instance="10.1.0.2:8080"}`,
		metric, ns, policy)
}

type inputSeries struct {
	Series string `json:"series"`
	Values string `json:"values"`
}

type expAlert struct {
	Labels      map[string]string `json:"exp_labels"`
	Annotations map[string]string `json:"exp_annotations"`
}

type alertTest struct {
	EvalTime  string     `json:"eval_time"`
	Alertname string     `json:"alertname"`
	ExpAlerts []expAlert `json:"exp_alerts"`
}

type exprTest struct {
	Expr       string `json:"expr"`
	EvalTime   string `json:"eval_time"`
	ExpSamples []struct {
		Labels string  `json:"labels"`
		Value  float64 `json:"value"`
	} `json:"exp_samples"`
}

type ruleTestGroup struct {
	Name     string        `json:"name"`
	Interval string        `json:"interval"`
	Input    []inputSeries `json:"input_series"`
	Alerts   []alertTest   `json:"alert_rule_test"`
	Exprs    []exprTest    `json:"promql_expr_test,omitempty"`
}

// healthy: every declared database of the example values (orders archives,
// backs up every 6 h and runs drills; catalog and sessions back up daily)
// with backups on schedule, archiving current, no gaps, drills passing.
// Series of another namespace's "orders" are bad on every count, and must
// not make the example's alerts fire.
func healthySeries(minutes int) []inputSeries {
	n := func(v string) string { return fmt.Sprintf("%sx%d", v, minutes) }
	var in []inputSeries
	add := func(s, v string) { in = append(in, inputSeries{s, v}) }
	for _, pod := range []string{"orders-0", "orders-1"} {
		// A backup at 0 and every 6 h after (each pod reports the last one it saw).
		add(sidecarSeries("amber_last_backup_success_timestamp_seconds", "shop", "orders", pod, ""),
			every6h(minutes))
		add(sidecarSeries("amber_recoverable_window_start_timestamp_seconds", "shop", "orders", pod, ""), n("-604800"))
		// Newest restorable point 30 s behind now.
		add(sidecarSeries("amber_recoverable_window_end_timestamp_seconds", "shop", "orders", pod, ""), fmt.Sprintf("-30+60x%d", minutes))
		add(sidecarSeries("amber_recoverable_window_gaps", "shop", "orders", pod, ""), n("0"))
		add(sidecarSeries("amber_backup_running", "shop", "orders", pod, ""), n("0"))
	}
	add(sidecarSeries("amber_archive_lag_seconds", "shop", "orders", "orders-0", ""), n("2"))
	add(sidecarSeries("amber_archive_pending_seconds", "shop", "orders", "orders-0", ""), n("0"))
	add(sidecarSeries("amber_archive_running", "shop", "orders", "orders-0", ""), n("1"))
	add(sidecarSeries("amber_archive_running", "shop", "orders", "orders-1", ""), n("0"))
	add(sidecarSeries("amber_backup_duration_seconds", "shop", "orders", "orders-0", ""), n("95"))
	add(sidecarSeries("amber_backup_bytes", "shop", "orders", "orders-0", `, kind="in"`), n("5e9"))
	add(sidecarSeries("amber_backup_bytes", "shop", "orders", "orders-0", `, kind="added"`), n("2e8"))
	add(controllerSeries("amber_drill_success", "shop", "orders"), n("1"))
	add(controllerSeries("amber_drill_rto_seconds", "shop", "orders"), n("240"))
	add(controllerSeries("amber_drill_rpo_seconds", "shop", "orders"), n("40"))
	for _, db := range [][2]string{{"shop", "catalog"}, {"sessions", "sessions"}} {
		pod := db[1] + "-0"
		// The daily backup ran at 0 and not since: healthy until a day plus
		// slack (26 h, 27 h) has passed.
		add(sidecarSeries("amber_last_backup_success_timestamp_seconds", db[0], db[1], pod, ""), n("0"))
		add(sidecarSeries("amber_recoverable_window_start_timestamp_seconds", db[0], db[1], pod, ""), n("-604800"))
		add(sidecarSeries("amber_recoverable_window_gaps", db[0], db[1], pod, ""), n("0"))
		add(sidecarSeries("amber_backup_running", db[0], db[1], pod, ""), n("0"))
	}
	// Another namespace's policy named orders, not declared in this release.
	add(sidecarSeries("amber_last_backup_success_timestamp_seconds", "other", "orders", "orders-0", ""), n("-999999"))
	add(sidecarSeries("amber_recoverable_window_end_timestamp_seconds", "other", "orders", "orders-0", ""), n("-999999"))
	add(sidecarSeries("amber_archive_lag_seconds", "other", "orders", "orders-0", ""), n("9999"))
	add(sidecarSeries("amber_archive_pending_seconds", "other", "orders", "orders-0", ""), n("9999"))
	add(sidecarSeries("amber_archive_running", "other", "orders", "orders-0", ""), n("0"))
	add(sidecarSeries("amber_recoverable_window_gaps", "other", "orders", "orders-0", ""), n("3"))
	add(controllerSeries("amber_drill_success", "other", "orders"), n("0"))
	return in
}

// every6h: the time of the last backup when one finishes at 0 and every
// 6 h after, one sample a minute for minutes.
func every6h(minutes int) string {
	var parts []string
	for k := 0; k*360 <= minutes; k++ {
		parts = append(parts, fmt.Sprintf("%dx%d", k*21600, min(360, minutes+1-k*360)-1))
	}
	return strings.Join(parts, " ")
}

// replace returns in with the values of the series whose text contains
// each key replaced.
func replace(in []inputSeries, values map[string]string) []inputSeries {
	out := make([]inputSeries, 0, len(in))
	for _, s := range in {
		for k, v := range values {
			if strings.Contains(s.Series, k) {
				s.Values = v
			}
		}
		out = append(out, s)
	}
	return out
}

var amberAlerts = []string{"AmberArchiveLagOverRPO", "AmberNoRecentBackup", "AmberRecoverableWindowGap", "AmberRestoreDrillFailed"}

// renderedRules renders the chart with the example values (monitoring on)
// and returns the PrometheusRule's spec.groups and each alert's annotations
// by alert/policy.
func renderedRules(t *testing.T) ([]any, map[string]map[string]string) {
	t.Helper()
	rule := one(t, render(t, "-f", exampleValues(t)), "PrometheusRule")
	groups, ok, err := unstructured.NestedSlice(rule.Object, "spec", "groups")
	if err != nil || !ok || len(groups) == 0 {
		t.Fatalf("PrometheusRule without spec.groups: %v", err)
	}
	ann := map[string]map[string]string{}
	policy := regexp.MustCompile(`policy="([a-z0-9-]+)"`)
	for _, g := range groups {
		rules, _ := g.(map[string]any)["rules"].([]any)
		for _, r := range rules {
			r := r.(map[string]any)
			m := policy.FindStringSubmatch(fmt.Sprint(r["expr"]))
			if m == nil {
				t.Fatalf("rule %v selects no policy: %v", r["alert"], r["expr"])
			}
			a := map[string]string{}
			if as, ok := r["annotations"].(map[string]any); ok {
				for k, v := range as {
					a[k] = fmt.Sprint(v)
				}
			}
			ann[fmt.Sprintf("%v/%s", r["alert"], m[1])] = a
		}
	}
	return groups, ann
}

// TestPromtoolRules: the chart's PrometheusRule passes `promtool check rules`
// and, in `promtool test rules` (Prometheus' own rule engine), each alert
// fires at the expected time with the expected labels on series named and
// labelled as the sidecars and amber-controller export them, and none fires
// on a healthy set of series.
func TestPromtoolRules(t *testing.T) {
	groups, ann := renderedRules(t)
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "rules.yaml"), map[string]any{"groups": groups})
	out := promtool(t, dir, "check", "rules", "--lint=all", "--lint-fatal", "rules.yaml")
	t.Logf("promtool check rules:\n%s", out)

	fire := func(alert, ns, policy, severity string) expAlert {
		a, ok := ann[alert+"/"+policy]
		if !ok {
			t.Fatalf("no %s rule for %s", alert, policy)
		}
		return expAlert{Labels: map[string]string{"namespace": ns, "policy": policy, "severity": severity}, Annotations: a}
	}
	none := func(times ...string) []alertTest {
		var ts []alertTest
		for _, at := range times {
			for _, a := range amberAlerts {
				ts = append(ts, alertTest{EvalTime: at, Alertname: a, ExpAlerts: []expAlert{}})
			}
		}
		return ts
	}
	// Example values: rpo 5m, for 10m; orders every 6 h + 2 h slack = 28800 s;
	// catalog daily + 3 h = 97200 s; sessions daily + 2 h = 93600 s.
	tests := []ruleTestGroup{{
		Name:     "healthy",
		Interval: "1m",
		Input:    healthySeries(1500),
		// Past every threshold the failing groups cross, nothing fires.
		Alerts: none("0m", "75m", "6h", "8h11m", "12h", "25h"),
	}, {
		// orders' store hangs at 59m: log received then waits, 360 s at
		// 65m (over the 300 s RPO), firing 10m later.
		Name:     "archive stalls",
		Interval: "1m",
		Input: replace(healthySeries(200), map[string]string{
			`amber_archive_pending_seconds{namespace="shop", policy="orders"`: "0x59 60+60x140",
		}),
		Alerts: append(none("64m"), []alertTest{
			{EvalTime: "74m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{}},
			{EvalTime: "75m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{fire("AmberArchiveLagOverRPO", "shop", "orders", "critical")}},
			{EvalTime: "75m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{}},
		}...),
	}, {
		// orders has no writes from 60m on: its newest restorable point stays
		// put while nothing waits to be stored. Nothing fires.
		Name:     "idle database",
		Interval: "1m",
		Input: replace(healthySeries(300), map[string]string{
			`amber_recoverable_window_end_timestamp_seconds{namespace="shop", policy="orders"`: "-30+60x60 3570x240",
		}),
		Alerts: none("75m", "200m", "290m"),
	}, {
		// The archiving pod stops archiving at 60m and no other takes over:
		// firing 10m later.
		Name:     "no archiver",
		Interval: "1m",
		Input: replace(healthySeries(200), map[string]string{
			`amber_archive_running{namespace="shop", policy="orders", pod="orders-0"`: "1x59 0x140",
		}),
		Alerts: append(none("59m"), []alertTest{
			{EvalTime: "69m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{}},
			{EvalTime: "70m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{fire("AmberArchiveLagOverRPO", "shop", "orders", "critical")}},
		}...),
	}, {
		// The newest point keeps up but a segment took 10 minutes to become
		// durable from 100m on (only the archiving pod orders-0 reports it).
		Name:     "archive lag",
		Interval: "1m",
		Input: replace(healthySeries(200), map[string]string{
			`amber_archive_lag_seconds{namespace="shop", policy="orders"`: "2x99 600x100",
		}),
		Alerts: append(none("99m"), []alertTest{
			{EvalTime: "109m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{}},
			{EvalTime: "110m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{fire("AmberArchiveLagOverRPO", "shop", "orders", "critical")}},
		}...),
	}, {
		// orders' backups stop after the one at 0: 28800 s passes at 8h, the
		// alert fires 10m after the first evaluation over it (8h1m).
		Name:     "no recent backup",
		Interval: "1m",
		Input: replace(healthySeries(600), map[string]string{
			`amber_last_backup_success_timestamp_seconds{namespace="shop", policy="orders"`: "0x600",
		}),
		Alerts: append(none("8h"), []alertTest{
			{EvalTime: "8h10m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{}},
			{EvalTime: "8h11m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{fire("AmberNoRecentBackup", "shop", "orders", "critical")}},
			{EvalTime: "8h11m", Alertname: "AmberArchiveLagOverRPO", ExpAlerts: []expAlert{}},
		}...),
	}, {
		// The daily databases, never backed up again after 0: sessions
		// (93600 s) fires at 26h11m, catalog (97200 s, its own 3 h slack) at
		// 27h11m, orders (backing up on time) never.
		Name:     "no recent daily backup",
		Interval: "1m",
		Input:    healthySeries(1700),
		Alerts: []alertTest{
			{EvalTime: "26h10m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{}},
			{EvalTime: "26h11m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{fire("AmberNoRecentBackup", "sessions", "sessions", "critical")}},
			{EvalTime: "27h10m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{fire("AmberNoRecentBackup", "sessions", "sessions", "critical")}},
			{EvalTime: "27h11m", Alertname: "AmberNoRecentBackup", ExpAlerts: []expAlert{
				fire("AmberNoRecentBackup", "shop", "catalog", "critical"),
				fire("AmberNoRecentBackup", "sessions", "sessions", "critical"),
			}},
		},
	}, {
		// A hole appears in orders' window at 30m (seen by one pod), catalog's
		// and sessions' at 40m; each fires 10m later, as a warning.
		Name:     "gap in the window",
		Interval: "1m",
		Input: replace(healthySeries(120), map[string]string{
			sidecarSeries("amber_recoverable_window_gaps", "shop", "orders", "orders-1", ""):         "0x29 1x90",
			sidecarSeries("amber_recoverable_window_gaps", "shop", "catalog", "catalog-0", ""):       "0x39 2x80",
			sidecarSeries("amber_recoverable_window_gaps", "sessions", "sessions", "sessions-0", ""): "0x39 1x80",
		}),
		Alerts: append(none("29m"), []alertTest{
			{EvalTime: "39m", Alertname: "AmberRecoverableWindowGap", ExpAlerts: []expAlert{}},
			{EvalTime: "40m", Alertname: "AmberRecoverableWindowGap", ExpAlerts: []expAlert{fire("AmberRecoverableWindowGap", "shop", "orders", "warning")}},
			{EvalTime: "50m", Alertname: "AmberRecoverableWindowGap", ExpAlerts: []expAlert{
				fire("AmberRecoverableWindowGap", "shop", "catalog", "warning"),
				fire("AmberRecoverableWindowGap", "shop", "orders", "warning"),
				fire("AmberRecoverableWindowGap", "sessions", "sessions", "warning"),
			}},
		}...),
	}, {
		// orders' drill fails at 20m (no `for`: fires at once) and passes
		// again at 50m.
		Name:     "drill fails",
		Interval: "1m",
		Input: replace(healthySeries(90), map[string]string{
			`amber_drill_success{namespace="shop", policy="orders"`: "1x19 0x29 1x40",
		}),
		Alerts: append(none("19m", "50m"), []alertTest{
			{EvalTime: "20m", Alertname: "AmberRestoreDrillFailed", ExpAlerts: []expAlert{fire("AmberRestoreDrillFailed", "shop", "orders", "critical")}},
			{EvalTime: "49m", Alertname: "AmberRestoreDrillFailed", ExpAlerts: []expAlert{fire("AmberRestoreDrillFailed", "shop", "orders", "critical")}},
		}...),
	}}
	writeYAML(t, filepath.Join(dir, "tests.yaml"), map[string]any{
		"rule_files": []string{"rules.yaml"}, "evaluation_interval": "1m", "tests": tests,
	})
	out = promtool(t, dir, "test", "rules", "tests.yaml")
	t.Logf("promtool test rules:\n%s", out)

	// Every alert the chart renders for the example is exercised above.
	var fired []string
	for _, g := range tests {
		for _, a := range g.Alerts {
			for _, e := range a.ExpAlerts {
				fired = append(fired, a.Alertname+"/"+e.Labels["policy"])
			}
		}
	}
	for key := range ann {
		if !strings.Contains(strings.Join(fired, " "), key) {
			t.Errorf("rendered alert %s is never made to fire", key)
		}
	}
}

// dashboardQueries returns every PromQL expression of the dashboard JSON
// (panel targets, nested rows included; template variables' label_values
// selectors) with Grafana's variables replaced by concrete values, by a
// recording rule name saying where it came from
// (amber_dashboard:panel_<id>_target_<n>, amber_dashboard:variable_<name>).
func dashboardQueries(t *testing.T, text []byte) map[string]string {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(text, &d); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	vars := strings.NewReplacer(
		"${namespace}", ".*", "$namespace", ".*", "${policy}", ".*", "$policy", ".*",
		"$__rate_interval", "2m", "$__interval", "30s", "$__range", "6h", "${__range}", "6h",
		"$__range_s", "21600", "$__interval_ms", "30000",
	)
	qs := map[string]string{}
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			p, _ := p.(map[string]any)
			targets, _ := p["targets"].([]any)
			for i, tg := range targets {
				tg, _ := tg.(map[string]any)
				if e, _ := tg["expr"].(string); e != "" {
					qs[fmt.Sprintf("amber_dashboard:panel_%v_target_%d", p["id"], i)] = vars.Replace(e)
				}
			}
			if sub, ok := p["panels"].([]any); ok {
				walk(sub)
			}
		}
	}
	panels, _ := d["panels"].([]any)
	walk(panels)
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	if tpl, ok := d["templating"].(map[string]any); ok {
		list, _ := tpl["list"].([]any)
		for _, v := range list {
			v, _ := v.(map[string]any)
			if v["type"] != "query" {
				continue
			}
			q, _ := v["query"].(string)
			if m, ok := v["query"].(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
			if m == nil {
				t.Errorf("variable %v: query %q is not label_values(<selector>, <label>)", v["name"], q)
				continue
			}
			qs[fmt.Sprintf("amber_dashboard:variable_%v", v["name"])] = vars.Replace(m[1])
		}
	}
	for name, q := range qs {
		if strings.Contains(q, "$") {
			t.Errorf("%s: a Grafana variable the test does not substitute: %s", name, q)
		}
	}
	return qs
}

// TestPromtoolDashboard: every PromQL expression of the Grafana dashboard
// parses in Prometheus (`promtool check rules` on them as recording rules),
// and each returns data when evaluated by Prometheus' engine over the healthy
// series of TestPromtoolRules (`promtool test rules`): the metric names and
// labels the queries use are the ones exported.
func TestPromtoolDashboard(t *testing.T) {
	_, chart := paths(t)
	text, err := os.ReadFile(filepath.Join(chart, "dashboards", "amber-databases.json"))
	if err != nil {
		t.Fatal(err)
	}
	qs := dashboardQueries(t, text)
	if len(qs) < 10 {
		t.Fatalf("found only %d queries in the dashboard: %v", len(qs), qs)
	}
	names := make([]string, 0, len(qs))
	for n := range qs {
		names = append(names, n)
	}
	sort.Strings(names)
	var rules []map[string]string
	var exprs []exprTest
	for _, n := range names {
		rules = append(rules, map[string]string{"record": n, "expr": qs[n]})
		e := exprTest{Expr: fmt.Sprintf("group(%s)", qs[n]), EvalTime: "7h"}
		e.ExpSamples = append(e.ExpSamples, struct {
			Labels string  `json:"labels"`
			Value  float64 `json:"value"`
		}{"{}", 1})
		exprs = append(exprs, e)
		t.Logf("%s: %s", n, qs[n])
	}
	dir := t.TempDir()
	writeYAML(t, filepath.Join(dir, "dashboard.yaml"), map[string]any{
		"groups": []any{map[string]any{"name": "dashboard", "rules": rules}},
	})
	promtool(t, dir, "check", "rules", "--lint=all", "--lint-fatal", "dashboard.yaml")
	writeYAML(t, filepath.Join(dir, "tests.yaml"), map[string]any{
		"rule_files": []string{"dashboard.yaml"}, "evaluation_interval": "1m",
		"tests": []ruleTestGroup{{Name: "dashboard", Interval: "1m", Input: healthySeries(500), Alerts: []alertTest{}, Exprs: exprs}},
	})
	promtool(t, dir, "test", "rules", "tests.yaml")
}
