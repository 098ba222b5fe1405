package charttest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// grafanaDashboard is the part of Grafana's dashboard JSON the test reads.
type grafanaDashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Repeat     string `json:"repeat"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboard: dashboards.enabled renders one ConfigMap labelled for
// Grafana's dashboard sidecar holding the chart's dashboard JSON, which
// parses, has a row repeated per database, and queries only metrics that
// sidecar/agent/metrics.go defines, each selected by namespace and policy,
// covering the recoverable window, archive lag, last good backup, backup
// duration and bytes. (Not rendered against a real Prometheus/Grafana.)
func TestDashboard(t *testing.T) {
	root, chart := paths(t)
	for _, cm := range render(t)["ConfigMap"] {
		if strings.HasSuffix(cm.GetName(), "-dashboards") {
			t.Errorf("dashboard ConfigMap %s rendered with dashboards.enabled false", cm.GetName())
		}
	}
	objs := render(t, "--set", "dashboards.enabled=true", "--set", "dashboards.namespace=monitoring",
		"--set", "dashboards.annotations.grafana_folder=Amber")
	cm := one(t, objs, "ConfigMap")
	if cm.GetNamespace() != "monitoring" || cm.GetLabels()["grafana_dashboard"] != "1" || cm.GetAnnotations()["grafana_folder"] != "Amber" {
		t.Errorf("dashboard ConfigMap %s/%s labels %v annotations %v; want namespace monitoring, grafana_dashboard=1, grafana_folder=Amber",
			cm.GetNamespace(), cm.GetName(), cm.GetLabels(), cm.GetAnnotations())
	}
	data, _ := cm.Object["data"].(map[string]any)
	text, _ := data["amber-databases.json"].(string)
	file, err := os.ReadFile(filepath.Join(chart, "dashboards", "amber-databases.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(text) != strings.TrimSpace(string(file)) {
		t.Errorf("the ConfigMap's amber-databases.json differs from dashboards/amber-databases.json")
	}
	var d grafanaDashboard
	dec := json.NewDecoder(strings.NewReader(text))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("dashboard JSON does not parse: %v", err)
	}
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard without title or uid: %q %q", d.Title, d.UID)
	}

	// The metric names the sidecar's and the controller's metrics.go define.
	defined := map[string]bool{}
	for _, f := range []string{filepath.Join(root, "sidecar", "agent", "metrics.go"), filepath.Join(root, "controller", "controllers", "metrics.go")} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`"(amber_[a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
			defined[m[1]] = true
		}
	}
	if len(defined) < 10 {
		t.Fatalf("found only %d metric names in sidecar/agent/metrics.go: %v", len(defined), defined)
	}

	vars := map[string]bool{}
	var queries []string
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		switch q := v.Query.(type) {
		case string:
			queries = append(queries, q)
		case map[string]any:
			if s, ok := q["query"].(string); ok {
				queries = append(queries, s)
			}
		}
	}
	for _, v := range []string{"datasource", "namespace", "policy"} {
		if !vars[v] {
			t.Errorf("dashboard has no template variable %q", v)
		}
	}
	ids := map[int]bool{}
	repeated := false
	queried := map[string]bool{}
	metric := regexp.MustCompile(`\b(amber_[a-z0-9_]+)\b(\{[^}]*\})?`)
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			repeated = repeated || p.Repeat == "policy"
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %+v, %d targets; want ${datasource} and a query", p.Title, p.Datasource, len(p.Targets))
		}
		for _, tg := range p.Targets {
			ms := metric.FindAllStringSubmatch(tg.Expr, -1)
			if len(ms) == 0 {
				t.Errorf("panel %q queries no amber metric: %s", p.Title, tg.Expr)
			}
			for _, m := range ms {
				queried[m[1]] = true
				// Per database: every series selected by namespace and policy.
				if !strings.Contains(m[2], `policy=~"$policy"`) || !strings.Contains(m[2], `namespace=~"$namespace"`) {
					t.Errorf("panel %q: %s%s is not selected by $namespace and $policy", p.Title, m[1], m[2])
				}
			}
		}
	}
	if !repeated {
		t.Errorf("no row repeated per $policy: panels are not per database")
	}
	for _, q := range queries {
		for _, m := range metric.FindAllStringSubmatch(q, -1) {
			queried[m[1]] = true
		}
	}
	var unknown []string
	for name := range queried {
		if !defined[name] {
			unknown = append(unknown, name)
		}
	}
	sort.Strings(unknown)
	if len(unknown) > 0 {
		t.Errorf("the dashboard queries metrics neither metrics.go defines: %v", unknown)
	}
	for _, want := range []string{
		"amber_recoverable_window_start_timestamp_seconds", "amber_recoverable_window_end_timestamp_seconds",
		"amber_archive_lag_seconds", "amber_last_backup_success_timestamp_seconds",
		"amber_backup_duration_seconds", "amber_backup_bytes",
		"amber_drill_success", "amber_drill_rto_seconds", "amber_drill_rpo_seconds",
	} {
		if !queried[want] {
			t.Errorf("the dashboard has no panel on %s", want)
		}
	}
}
