/*
 * mlp-gpu: the quantized MLP mlp-gpu.wgsl runs, as a WASI program over the
 * same bytes, so a GPU task and a CPU task of the same inference can be
 * compared byte for byte.
 *
 *   usage: mlp-gpu < INPUT > OUTPUT
 *
 *   64 int8 inputs → 32 hidden units (ReLU, requantized to int8) → 10 logits
 *
 * stdin, all little-endian, in the kernel's buffers:
 *   params: batch, multiplier, shift (u32);
 *   model: w1 (32 × 64 int8, hidden unit j's weights at bytes 64j …),
 *          b1 (32 i32), w2 (10 × 32 int8, logit o's weights at 32o …),
 *          b2 (10 i32);
 *   inputs: batch × 64 int8, one input per row; nothing after.
 * stdout: per input, the 10 logits and its class (the index of the largest
 * logit, the first one on a tie), 11 i32: the kernel's results buffer.
 *
 * hidden unit = clamp(round(sum · multiplier / 2^shift), 0, 127), halves
 * rounded up, with 1 ≤ multiplier < 2^31, 32 ≤ shift ≤ 62 and
 * 1 ≤ batch ≤ 262144. Sums wrap as i32, as on the GPU.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define INPUTS 64
#define HIDDEN 32
#define OUTPUTS 10
#define BATCH_MAX 262144u

static int read_exact(void *buffer, size_t bytes)
{
    return fread(buffer, 1, bytes, stdin) == bytes;
}

static uint32_t le32(const uint8_t *bytes)
{
    return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 | (uint32_t)bytes[2] << 16
        | (uint32_t)bytes[3] << 24;
}

static int fail(const char *why)
{
    fprintf(stderr, "mlp-gpu: %s\n", why);
    return 1;
}

/* bias + Σ x·w over `count` terms, wrapping as an i32 does on the GPU. */
static int32_t neuron(int32_t bias, const int8_t *x, const int8_t *w, int count)
{
    uint32_t sum = (uint32_t)bias;
    for (int i = 0; i < count; i++)
        sum += (uint32_t)((int32_t)x[i] * w[i]);
    return (int32_t)sum;
}

int main(void)
{
    uint8_t header[12];
    uint8_t model[HIDDEN * INPUTS + HIDDEN * 4 + OUTPUTS * HIDDEN + OUTPUTS * 4];
    if (!read_exact(header, sizeof header) || !read_exact(model, sizeof model))
        return fail("stdin ends before the end of the params and the model");
    uint32_t batch = le32(header), multiplier = le32(header + 4), shift = le32(header + 8);
    if (batch < 1 || batch > BATCH_MAX)
        return fail("the batch must be 1 ... 262144 inputs");
    if (multiplier < 1 || multiplier >= 0x80000000u || shift < 32 || shift > 62)
        return fail("the multiplier must be 1 ... 2^31 - 1 and the shift 32 ... 62");

    const int8_t *w1 = (const int8_t *)model;
    const uint8_t *b1 = model + HIDDEN * INPUTS;
    const int8_t *w2 = (const int8_t *)(b1 + HIDDEN * 4);
    const uint8_t *b2 = (const uint8_t *)w2 + OUTPUTS * HIDDEN;
    int8_t *inputs = malloc((size_t)batch * INPUTS);
    if (inputs == NULL)
        return fail("out of memory");
    if (!read_exact(inputs, (size_t)batch * INPUTS))
        return fail("stdin ends before the end of the inputs");
    if (fgetc(stdin) != EOF)
        return fail("stdin goes on after the inputs");

    for (uint32_t row = 0; row < batch; row++) {
        const int8_t *input = inputs + (size_t)row * INPUTS;
        int8_t hidden[HIDDEN];
        for (int unit = 0; unit < HIDDEN; unit++) {
            int32_t sum = neuron((int32_t)le32(b1 + unit * 4), input, w1 + unit * INPUTS, INPUTS);
            int64_t scaled = ((int64_t)sum * multiplier + ((int64_t)1 << (shift - 1))) >> shift;
            hidden[unit] = (int8_t)(scaled < 0 ? 0 : scaled > 127 ? 127 : scaled);
        }
        int32_t results[OUTPUTS + 1];
        int best = 0;
        for (int output = 0; output < OUTPUTS; output++) {
            results[output] =
                neuron((int32_t)le32(b2 + output * 4), hidden, w2 + output * HIDDEN, HIDDEN);
            if (results[output] > results[best])
                best = output;
        }
        results[OUTPUTS] = best;
        uint8_t bytes[(OUTPUTS + 1) * 4];
        for (int i = 0; i <= OUTPUTS; i++)
            for (int byte = 0; byte < 4; byte++)
                bytes[i * 4 + byte] = (uint8_t)((uint32_t)results[i] >> (8 * byte));
        if (fwrite(bytes, 1, sizeof bytes, stdout) != sizeof bytes)
            return fail("cannot write stdout");
    }
    free(inputs);
    return 0;
}
