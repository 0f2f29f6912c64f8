package bench

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"
)

// The chart is drawn by hand on an image.RGBA with x/image's fixed 7x13
// font (scaled up for titles): two panels of grouped bars with min-max
// whiskers, one for the data plane's ratios to the underlay, one for the
// control plane's latencies on a log scale.

var (
	colBG      = color.RGBA{255, 255, 255, 255}
	colText    = color.RGBA{30, 30, 30, 255}
	colGrid    = color.RGBA{225, 225, 225, 255}
	colAxis    = color.RGBA{120, 120, 120, 255}
	colRef     = color.RGBA{200, 40, 40, 255}
	colOverlay = color.RGBA{230, 145, 56, 255}
	colWeft    = color.RGBA{52, 110, 190, 255}
)

// bar is one bar: a median with its spread.
type bar struct {
	s   Summary
	col color.RGBA
}

// group is a labelled cluster of bars.
type group struct {
	label []string // lines under the cluster
	bars  []bar
}

// canvas wraps the image with drawing helpers.
type canvas struct{ img *image.RGBA }

func (c canvas) rect(x0, y0, x1, y1 int, col color.Color) {
	if x0 > x1 {
		x0, x1 = x1, x0
	}
	if y0 > y1 {
		y0, y1 = y1, y0
	}
	draw.Draw(c.img, image.Rect(x0, y0, x1, y1), &image.Uniform{col}, image.Point{}, draw.Src)
}

func (c canvas) hline(x0, x1, y int, col color.Color) { c.rect(x0, y, x1, y+1, col) }
func (c canvas) vline(x, y0, y1 int, col color.Color) { c.rect(x, y0, x+1, y1, col) }

// textWidth is the width of s at scale.
func textWidth(s string, scale int) int { return len(s) * 7 * scale }

// text draws s with its top-left corner at (x, y), scaled by an integer.
func (c canvas) text(x, y int, s string, col color.Color, scale int) {
	w, h := textWidth(s, 1), 13
	if w == 0 {
		return
	}
	tmp := image.NewRGBA(image.Rect(0, 0, w, h))
	d := font.Drawer{Dst: tmp, Src: &image.Uniform{col}, Face: basicfont.Face7x13, Dot: fixed.P(0, 11)}
	d.DrawString(s)
	for ty := 0; ty < h; ty++ {
		for tx := 0; tx < w; tx++ {
			p := tmp.RGBAAt(tx, ty)
			if p.A == 0 {
				continue
			}
			c.rect(x+tx*scale, y+ty*scale, x+(tx+1)*scale, y+(ty+1)*scale, p)
		}
	}
}

// centered draws s centred on x.
func (c canvas) centered(x, y int, s string, col color.Color, scale int) {
	c.text(x-textWidth(s, scale)/2, y, s, col, scale)
}

// panel draws grouped bars in the box (x0,y0)-(x1,y1). yOf maps a value
// to a fraction of the height (0 bottom, 1 top), ticks are the grid values
// with their labels, refs are red reference lines.
type panel struct {
	title  string
	groups []group
	yOf    func(float64) float64
	ticks  []float64
	tickFn func(float64) string
	refs   []float64
	valFn  func(float64) string
}

func (c canvas) panel(p panel, x0, y0, x1, y1 int) {
	c.text(x0, y0, p.title, colText, 2)
	top := y0 + 40
	bottom := y1 - 44
	left := x0 + 60
	right := x1
	h := bottom - top
	yPix := func(v float64) int {
		f := p.yOf(v)
		f = math.Max(0, math.Min(1, f))
		return bottom - int(f*float64(h))
	}
	for _, t := range p.ticks {
		y := yPix(t)
		c.hline(left, right, y, colGrid)
		lbl := p.tickFn(t)
		c.text(left-8-textWidth(lbl, 1), y-7, lbl, colAxis, 1)
	}
	c.vline(left, top, bottom+1, colAxis)
	c.hline(left, right, bottom, colAxis)
	for _, r := range p.refs {
		y := yPix(r)
		for x := left; x < right; x += 8 {
			c.hline(x, min(x+4, right), y, colRef)
		}
	}
	if len(p.groups) == 0 {
		c.centered((left+right)/2, (top+bottom)/2, "no data", colAxis, 2)
		return
	}
	gw := (right - left) / len(p.groups)
	for gi, g := range p.groups {
		gx := left + gi*gw
		n := len(g.bars)
		bw := min(56, (gw-24)/max(n, 1))
		bx := gx + (gw-bw*n)/2
		for bi, b := range g.bars {
			xa := bx + bi*bw + 3
			xb := bx + (bi+1)*bw - 3
			if math.IsNaN(b.s.Median) {
				c.centered((xa+xb)/2, bottom-16, "n/a", colAxis, 1)
				continue
			}
			c.rect(xa, yPix(b.s.Median), xb, bottom, b.col)
			// Whisker: min to max over the repetitions.
			xm := (xa + xb) / 2
			ya, yb := yPix(b.s.Min), yPix(b.s.Max)
			c.vline(xm, yb, ya+1, colText)
			c.hline(xm-5, xm+6, ya, colText)
			c.hline(xm-5, xm+6, yb, colText)
			lbl := p.valFn(b.s.Median)
			c.centered(xm, min(yPix(b.s.Median), yb)-15, lbl, colText, 1)
		}
		for li, l := range g.label {
			c.centered(gx+gw/2, bottom+6+li*14, l, colText, 1)
		}
	}
}

// dataGroups builds the data-plane panel: per underlay MTU and metric, the
// overlay's and weft's ratio to the underlay.
func dataGroups(r *Results) []group {
	metrics := []struct{ key, name string }{
		{MetricTCP1, "TCP 1 stream"},
		{MetricTCP4, "TCP 4 streams"},
		{MetricRR, "req/resp rate"},
		{MetricRTT50, "RTT p50 (lower=better)"},
	}
	var gs []group
	for _, d := range r.Data {
		u := d.Net(NetUnderlay)
		if u == nil {
			continue
		}
		for _, m := range metrics {
			g := group{label: []string{m.name, fmt.Sprintf("MTU %d", d.UnderlayMTU)}}
			for _, n := range []struct {
				net string
				col color.RGBA
			}{{NetOverlay, colOverlay}, {NetWeft, colWeft}} {
				nd := d.Net(n.net)
				s := Summary{Median: math.NaN()}
				if nd != nil {
					s = Summarize(Ratios(nd.Metrics[m.key], u.Metrics[m.key]))
				}
				g.bars = append(g.bars, bar{s, n.col})
			}
			gs = append(gs, g)
		}
	}
	return gs
}

// controlGroups builds the control-plane panel, in seconds.
func controlGroups(r *Results) []group {
	if r.Control == nil {
		return nil
	}
	var ov, wf *ControlNetData
	for i := range r.Control.Nets {
		switch r.Control.Nets[i].Net {
		case NetOverlay:
			ov = &r.Control.Nets[i]
		case NetWeft:
			wf = &r.Control.Nets[i]
		}
	}
	pick := func(nd *ControlNetData, f func(*ControlNetData) Summary) Summary {
		if nd == nil {
			return Summary{Median: math.NaN()}
		}
		return f(nd)
	}
	perRep := func(p float64) func(*ControlNetData) Summary {
		return func(nd *ControlNetData) Summary {
			var xs []float64
			for _, rep := range nd.RunToReach {
				xs = append(xs, percentileOK(rep, p)/1000)
			}
			return Summarize(xs)
		}
	}
	rows := []struct {
		label []string
		f     func(*ControlNetData) Summary
	}{
		{[]string{"docker run to", "reachable p50"}, perRep(50)},
		{[]string{"docker run to", "reachable p99"}, perRep(99)},
		{[]string{"cut-off host", "purged everywhere"}, func(nd *ControlNetData) Summary { return Summarize(nd.Purge) }},
		{[]string{"returning host", "reachable"}, func(nd *ControlNetData) Summary { return Summarize(nd.Return) }},
	}
	var gs []group
	for _, row := range rows {
		gs = append(gs, group{label: row.label, bars: []bar{{pick(ov, row.f), colOverlay}, {pick(wf, row.f), colWeft}}})
	}
	return gs
}

// percentileOK is Percentile over the values that are not NaN.
func percentileOK(xs []float64, p float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	return Percentile(v, p)
}

// WriteChart draws the data-plane ratios and control-plane latencies of r
// to a PNG file.
func WriteChart(r *Results, path string) error {
	const W, H = 1400, 980
	c := canvas{image.NewRGBA(image.Rect(0, 0, W, H))}
	c.rect(0, 0, W, H, colBG)
	title := fmt.Sprintf("weft vs Docker overlay  (%s, commit %s, %d/%d reps%s)", r.Date.Format("2006-01-02"), r.Commit, max(r.Reps, r.DataReps), r.Reps, map[bool]string{true: ", SMOKE RUN", false: ""}[r.Smoke])
	c.text(20, 14, title, colText, 2)
	// Legend.
	lx := W - 460
	for i, l := range []struct {
		name string
		col  color.RGBA
	}{{"Docker overlay", colOverlay}, {"weft", colWeft}} {
		x := lx + i*180
		c.rect(x, 52, x+18, 66, l.col)
		c.text(x+24, 52, l.name, colText, 1)
	}
	c.text(lx, 72, "bar: median; whisker: min-max over reps", colAxis, 1)

	dg := dataGroups(r)
	maxRatio := 1.2
	for _, g := range dg {
		for _, b := range g.bars {
			if !math.IsNaN(b.s.Max) {
				maxRatio = math.Max(maxRatio, b.s.Max*1.1)
			}
		}
	}
	maxRatio = math.Ceil(maxRatio*5) / 5
	var ticks []float64
	for t := 0.0; t <= maxRatio+1e-9; t += 0.2 {
		ticks = append(ticks, t)
	}
	c.panel(panel{
		title:  "Data plane: ratio to the underlay, same run (dashed: 1.0)",
		groups: dg,
		yOf:    func(v float64) float64 { return v / maxRatio },
		ticks:  ticks,
		tickFn: func(v float64) string { return fmt.Sprintf("%.1f", v) },
		refs:   []float64{1},
		valFn:  func(v float64) string { return fmt.Sprintf("%.2f", v) },
	}, 20, 90, W-20, 530)

	lo, hi := 0.1, 100.0
	c.panel(panel{
		title:  "Control plane: seconds, log scale (dashed: 5 s target)",
		groups: controlGroups(r),
		yOf: func(v float64) float64 {
			if v <= 0 {
				return 0
			}
			return (math.Log10(v) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		},
		ticks:  []float64{0.1, 0.3, 1, 3, 10, 30, 100},
		tickFn: func(v float64) string { return fmt.Sprintf("%g s", v) },
		refs:   []float64{5},
		valFn: func(v float64) string {
			if v < 10 {
				return fmt.Sprintf("%.2f s", v)
			}
			return fmt.Sprintf("%.0f s", v)
		},
	}, 20, 550, W-20, H-10)

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
