package mesh

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestSyncScheduler drives the scheduler through scripts of events, one
// SyncInterval tick at a time. Each step is "AT OP [ARG]" with AT in ticks
// from the start; "tick" must start an exchange ("tick yes") or not
// ("tick no"), and "tick yes" is followed by the exchange going to peer p.
func TestSyncScheduler(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []string
	}{
		{"quiet: nothing to do", []string{
			"0 tick no", "1 tick no", "50 tick no",
		}},
		{"a few changes rely on broadcasts", []string{
			"0 change 8", "1 tick no",
		}},
		{"a burst starts rounds, one exchange at a time", []string{
			"0 change 9", "1 tick yes",
			"2 tick no", // waiting for p's answer
			"2 answer", "3 tick yes",
			"4 answer", "4 differ", "5 tick yes",
		}},
		{"the changes counted are those since the last tick", []string{
			"0 change 5", "1 tick no", "1 change 5", "2 tick no",
		}},
		{"an overflowing queue starts rounds", []string{
			"0 prune", "1 tick yes",
		}},
		{"an unanswered exchange is given up after syncWait ticks", []string{
			"0 change 9", "1 tick yes", "2 tick no", "6 tick no", "7 tick yes",
		}},
		{"an answer from another peer does not end the wait", []string{
			"0 change 9", "1 tick yes", "2 answer q", "3 tick no",
		}},
		{"equal comparisons end the rounds, then tail checks at growing intervals", []string{
			"0 change 9", "1 tick yes",
			"1 answer", "1 equal", "2 tick yes",
			"2 answer", "2 equal", "3 tick yes",
			"3 answer", "3 equal", // third in a row: stop; tail checks from 3+5
			"4 tick no", "7 tick no",
			"8 tick yes", "8 answer", // first check; next one 10 ticks on
			"9 tick no", "17 tick no",
			"18 tick yes", "18 answer", // second; next 20 ticks on
			"37 tick no",
			"38 tick yes", "38 answer", // third and last
			"100 tick no",
		}},
		{"a difference in the tail starts the rounds again", []string{
			"0 prune", "1 tick yes",
			"1 answer", "1 equal", "1 equal", "1 equal",
			"6 tick yes", "6 answer", "6 differ",
			"7 tick yes", "7 answer", "8 tick yes",
		}},
		{"an equal comparison outside rounds changes nothing", []string{
			"0 equal", "0 equal", "0 equal", "10 tick no", "100 tick no",
		}},
		{"a difference found answering a peer starts rounds", []string{
			"0 differ", "1 tick yes",
		}},
		{"a burst restarts a tail", []string{
			"0 prune", "1 tick yes", "1 answer", "1 equal", "1 equal", "1 equal",
			"2 change 20", "3 tick yes", "3 answer", "4 tick yes",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const iv = time.Second
			s := syncScheduler{interval: iv}
			t0 := time.Unix(1e9, 0)
			for _, step := range tc.steps {
				f := strings.Fields(step)
				at, err := strconv.Atoi(f[0])
				if err != nil {
					t.Fatalf("bad step %q", step)
				}
				now := t0.Add(time.Duration(at) * iv)
				arg := ""
				if len(f) > 2 {
					arg = f[2]
				}
				switch f[1] {
				case "change":
					n, _ := strconv.Atoi(arg)
					s.changed(n)
				case "prune":
					s.overflowed()
				case "equal", "differ":
					s.compared(f[1] == "differ", now)
				case "answer":
					s.answered(cmp.Or(arg, "p"))
				case "tick":
					got := s.tick(now)
					if want := arg == "yes"; got != want {
						t.Fatalf("step %q: tick = %v (scheduler %s)", step, got, describe(&s))
					}
					if got {
						s.started("p", now)
					}
				default:
					t.Fatalf("bad step %q", step)
				}
			}
		})
	}
}

func describe(s *syncScheduler) string {
	return fmt.Sprintf("{differs %v, equal runs %d, tail left %d at %v, peer %q since %v}",
		s.differs, s.equalRuns, s.tailLeft, s.tailAt.Unix()-1e9, s.peer, s.since.Unix()-1e9)
}
