// Mandelbrot escape counts in f32, inside idlegrid's exact class: only
// `+ - *`, comparisons and conversions, so every GPU (and the CPU) gives
// the same counts. One invocation per pixel.
//
// params: width, height, the iteration cap, the bits of the f32 steps
// between pixels in x and y, and the band (optional, 0 when absent): the
// kernel computes rows band × height to band × height + height - 1 of the
// view, which starts at (-2.25, -1.5). A job splits an image into bands,
// one per task.
// counts: one u32 per pixel, row by row.

@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read_write> counts: array<u32>;

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let width = params[0];
    let height = params[1];
    if (id.x >= width || id.y >= height) {
        return;
    }
    let x0 = f32(id.x) * bitcast<f32>(params[3]) - 2.25;
    let row = params[5] * height + id.y;
    let y0 = f32(row) * bitcast<f32>(params[4]) - 1.5;
    var x = 0.0;
    var y = 0.0;
    var i = 0u;
    loop {
        if (i >= params[2]) {
            break;
        }
        let x2 = x * x;
        let y2 = y * y;
        if (x2 + y2 > 4.0) {
            break;
        }
        let xt = x2 - y2 + x0;
        y = 2.0 * x * y + y0;
        x = xt;
        i = i + 1u;
    }
    counts[id.y * width + id.x] = i;
}
