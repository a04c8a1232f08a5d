package observe

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/switchboard-dev/switchboard/journal"
	"github.com/switchboard-dev/switchboard/service/registry"
)

// AdminConfig configures the admin HTTP address's handlers (AdminMux).
type AdminConfig struct {
	// Gatherer is served on /metrics; nil: no /metrics.
	Gatherer prometheus.Gatherer
	// Journal must be healthy for /readyz.
	Journal journal.Journal
	// Resources: every listener must be LISTENING for /readyz.
	Resources Resources
	// Lifecycle says whether Restore has finished and whether the server
	// is shutting down, for /readyz; nil: taken as restored and running.
	Lifecycle *Lifecycle
	// Pprof serves net/http/pprof under /debug/pprof/.
	Pprof bool
}

// Lifecycle is the server's phase as /readyz sees it; serve sets it. The
// zero value is a server still restoring. Safe for concurrent use.
type Lifecycle struct {
	restored, stopping atomic.Bool
}

// SetRestored records that Restore has finished: listeners and connections
// are back.
func (l *Lifecycle) SetRestored() { l.restored.Store(true) }

// SetStopping records that shutdown has begun.
func (l *Lifecycle) SetStopping() { l.stopping.Store(true) }

// AdminMux returns the admin address's handlers:
//
//	/metrics        Prometheus, from cfg.Gatherer
//	/healthz        liveness: 200 "ok" while the process serves HTTP
//	/readyz         readiness: 200 "ready" when the journal is healthy,
//	                Restore has finished, the server is not shutting down
//	                and every listener is LISTENING; else 503 with one
//	                line per failing check
//	/debug/pprof/   net/http/pprof, only with cfg.Pprof
//
// Other handlers (the console) may be added to the returned mux.
func AdminMux(cfg AdminConfig) *http.ServeMux {
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if reasons := NotReady(cfg); len(reasons) > 0 {
			plain(w, http.StatusServiceUnavailable, "not ready:\n"+strings.Join(reasons, "\n")+"\n")
			return
		}
		plain(w, http.StatusOK, "ready\n")
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// NotReady returns why the server is not ready, one reason per failing
// check; none when it is.
func NotReady(cfg AdminConfig) []string {
	var out []string
	if l := cfg.Lifecycle; l != nil {
		if l.stopping.Load() {
			out = append(out, "shutting down")
		} else if !l.restored.Load() {
			out = append(out, "restore not finished: listeners and connections of the last run are still coming back")
		}
	}
	if j := cfg.Journal; j != nil {
		if err, _ := j.Health(); err != nil {
			out = append(out, fmt.Sprintf("journal: %v", err))
		}
	}
	if r := cfg.Resources; r != nil {
		for _, v := range allListeners(r) {
			if v.State == registry.ListenerListening {
				continue
			}
			why := fmt.Sprintf("listener %q is %s", v.ID, v.State)
			if v.LastError != nil {
				why += fmt.Sprintf(": %v", v.LastError)
			}
			if !v.NextAttempt.IsZero() {
				why += fmt.Sprintf(" (next attempt %s)", v.NextAttempt.UTC().Format("2006-01-02T15:04:05Z"))
			}
			out = append(out, why)
		}
	}
	return out
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = fmt.Fprint(w, body)
}
