package plugin

import (
	"strings"
	"testing"
	"time"
)

func TestLocalModeSettings(t *testing.T) {
	c, err := ConfigFromEnv(env(map[string]string{"WEFT_IPAM_BLOCK": "/28", "WEFT_IPAM_RECLAIM": "30s"}))
	if err != nil || c.IPAMBlock != 28 || c.IPAMReclaim != 30*time.Second {
		t.Fatalf("settings: %+v, %v", c, err)
	}
	_, err = ConfigFromEnv(env(map[string]string{"WEFT_IPAM_BLOCK": "31", "WEFT_IPAM_RECLAIM": "soon"}))
	for _, want := range []string{"WEFT_IPAM_BLOCK", "WEFT_IPAM_RECLAIM"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
}
