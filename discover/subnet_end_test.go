package discover

import (
	"log/slog"
	"testing"
)

// A subnet's directed broadcast (10.1.0.255 on 10.1.0.5/24) and its
// network address (10.1.0.0) are no host's: an answer naming one is
// dropped.
func TestSubnetEndsAreNoPeers(t *testing.T) {
	good := []string{"v=1", "id=" + idA, "name=alpha", "state=idle"}
	for _, a := range []string{"10.1.0.255", "10.1.0.0"} {
		c := newCollector(testLink(), slog.New(slog.DiscardHandler))
		if got := c.add(wire(t, answer("alpha-01234567", Service, 7000, good, a)...)); len(got) != 0 {
			t.Errorf("a peer at %s (not a host of 10.1.0.0/24) was found: %+v", a, got[0].Addr)
		}
	}
}
