package dns

import (
	"slices"
	"testing"

	"github.com/weftnet/weft/engine"
)

func TestContainerNames(t *testing.T) {
	var c engine.Container
	c.Name = "/peer.2.x7k"
	c.Config.Hostname = "VP2"
	c.Config.Labels = map[string]string{labelService: "peer", labelTask: "peer.2.x7k"}
	es := engine.EndpointSettings{Aliases: []string{"ledger", "bad alias!", "vp2"}}
	got := ContainerNames(c, es)
	want := []string{"vp2", "peer.2.x7k", "ledger", "peer.2", "peer", "tasks.peer"}
	if !slices.Equal(got, want) {
		t.Fatalf("names %v, want %v (most specific first, invalid and repeated dropped)", got, want)
	}
	// A global service's task names its node, not a slot: still
	// <service>.<that>.
	c.Config.Labels[labelTask] = "agent.nodeid.taskid"
	c.Config.Labels[labelService] = "agent"
	if got := ContainerNames(c, engine.EndpointSettings{}); !slices.Contains(got, "agent.nodeid") {
		t.Fatalf("global task names %v", got)
	}
}
