package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/docker/go-plugins-helpers/ipam"
	"github.com/docker/go-plugins-helpers/network"
)

// maxRequest bounds the body of a request from Docker; real ones are a few
// kilobytes.
const maxRequest = 1 << 20

const contentType = "application/vnd.docker.plugins.v1.2+json"

// errorResponse is the body libnetwork reads an error from.
type errorResponse struct {
	Err string
}

// NewHandler serves the network driver and the IPAM driver on one socket,
// as the managed plugin's manifest declares. Every request body is bounded
// and decoded strictly; a malformed one gets one clear sentence back; a
// panic in a handler becomes an error response, never a dropped
// connection.
func NewHandler(d network.Driver, a ipam.Ipam, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]string{"Implements": {"NetworkDriver", "IpamDriver"}})
	})

	// Network driver.
	handle(mux, log, "/NetworkDriver.GetCapabilities", func(*struct{}) (any, error) { return d.GetCapabilities() })
	handle(mux, log, "/NetworkDriver.AllocateNetwork", func(r *network.AllocateNetworkRequest) (any, error) { return d.AllocateNetwork(r) })
	handle(mux, log, "/NetworkDriver.FreeNetwork", func(r *network.FreeNetworkRequest) (any, error) { return empty(d.FreeNetwork(r)) })
	handle(mux, log, "/NetworkDriver.CreateNetwork", func(r *network.CreateNetworkRequest) (any, error) { return empty(d.CreateNetwork(r)) })
	handle(mux, log, "/NetworkDriver.DeleteNetwork", func(r *network.DeleteNetworkRequest) (any, error) { return empty(d.DeleteNetwork(r)) })
	handle(mux, log, "/NetworkDriver.CreateEndpoint", func(r *network.CreateEndpointRequest) (any, error) { return d.CreateEndpoint(r) })
	handle(mux, log, "/NetworkDriver.DeleteEndpoint", func(r *network.DeleteEndpointRequest) (any, error) { return empty(d.DeleteEndpoint(r)) })
	handle(mux, log, "/NetworkDriver.EndpointOperInfo", func(r *network.InfoRequest) (any, error) { return d.EndpointInfo(r) })
	handle(mux, log, "/NetworkDriver.Join", func(r *network.JoinRequest) (any, error) { return d.Join(r) })
	handle(mux, log, "/NetworkDriver.Leave", func(r *network.LeaveRequest) (any, error) { return empty(d.Leave(r)) })
	handle(mux, log, "/NetworkDriver.DiscoverNew", func(r *network.DiscoveryNotification) (any, error) { return empty(d.DiscoverNew(r)) })
	handle(mux, log, "/NetworkDriver.DiscoverDelete", func(r *network.DiscoveryNotification) (any, error) { return empty(d.DiscoverDelete(r)) })
	handle(mux, log, "/NetworkDriver.ProgramExternalConnectivity", func(r *network.ProgramExternalConnectivityRequest) (any, error) {
		return empty(d.ProgramExternalConnectivity(r))
	})
	handle(mux, log, "/NetworkDriver.RevokeExternalConnectivity", func(r *network.RevokeExternalConnectivityRequest) (any, error) {
		return empty(d.RevokeExternalConnectivity(r))
	})

	// IPAM driver.
	handle(mux, log, "/IpamDriver.GetCapabilities", func(*struct{}) (any, error) { return a.GetCapabilities() })
	handle(mux, log, "/IpamDriver.GetDefaultAddressSpaces", func(*struct{}) (any, error) { return a.GetDefaultAddressSpaces() })
	handle(mux, log, "/IpamDriver.RequestPool", func(r *ipam.RequestPoolRequest) (any, error) { return a.RequestPool(r) })
	handle(mux, log, "/IpamDriver.ReleasePool", func(r *ipam.ReleasePoolRequest) (any, error) { return empty(a.ReleasePool(r)) })
	handle(mux, log, "/IpamDriver.RequestAddress", func(r *ipam.RequestAddressRequest) (any, error) { return a.RequestAddress(r) })
	handle(mux, log, "/IpamDriver.ReleaseAddress", func(r *ipam.ReleaseAddressRequest) (any, error) { return empty(a.ReleaseAddress(r)) })

	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorResponse{Err: fmt.Sprintf("weft does not implement %s", r.URL.Path)})
	})
	return mux
}

func empty(err error) (any, error) { return struct{}{}, err }

// handle registers one call: decode Req, run f, encode its answer.
func handle[Req any](mux *http.ServeMux, log *slog.Logger, path string, f func(*Req) (any, error)) {
	call := strings.TrimPrefix(path, "/")
	mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("handler panicked", "call", call, "panic", fmt.Sprint(p))
				writeJSON(w, http.StatusInternalServerError, errorResponse{Err: fmt.Sprintf("weft: internal error in %s; see the plugin's log", call)})
			}
		}()
		if r.Method != http.MethodPost {
			writeJSON(w, http.StatusMethodNotAllowed, errorResponse{Err: fmt.Sprintf("weft: %s takes POST", call)})
			return
		}
		req := new(Req)
		body := http.MaxBytesReader(w, r.Body, maxRequest)
		if err := decode(body, req); err != nil {
			log.Warn("malformed request", "call", call, "err", err)
			writeJSON(w, http.StatusBadRequest, errorResponse{Err: fmt.Sprintf("weft: malformed %s request: %v", call, err)})
			return
		}
		res, err := f(req)
		if err != nil {
			log.Warn("request refused", "call", call, "err", err)
			writeJSON(w, http.StatusInternalServerError, errorResponse{Err: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
}

// decode reads one JSON value; an empty body is an empty request (Docker
// sends `null` or nothing for calls without arguments).
func decode(r io.Reader, v any) error {
	b, err := io.ReadAll(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body larger than %d bytes", maxRequest)
		}
		return err
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
