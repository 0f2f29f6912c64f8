package dataplane

// EntryCounts returns how many static FDB entries and permanent neighbour
// entries the device of vni holds: what weft programmed for the remote
// endpoints, as the kernel has it now. It reads the tables (a dump of
// each), so it is for metrics and reports, not for a hot path.
func (k *Kernel) EntryCounts(vni uint32) (fdb, neigh int, err error) {
	_, f, a, err := k.tables(DeviceName(vni))
	if err != nil {
		return 0, 0, err
	}
	for _, n := range f {
		if isStaticFDB(n) {
			fdb++
		}
	}
	for _, n := range a {
		if isStaticNeigh(n) {
			neigh++
		}
	}
	return fdb, neigh, nil
}
