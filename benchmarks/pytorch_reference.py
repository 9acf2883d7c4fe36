#!/usr/bin/env python3
"""The reference U-Net in PyTorch, timed the way benchmarks/unet_bench.cpp times ours.

Optional: diffuse never depends on PyTorch. Without torch this script says so and exits 0.
Same architecture and parameter names as diffuse::UNet (DDPM's U-Net, base 32, multipliers 1,2,2,
two ResBlocks per level, attention at 7x7, GroupNorm 8 groups, dropout 0.1, 10 classes + "no class").

    python3 benchmarks/pytorch_reference.py [--threads 2] [--repeats 5]
prints the median time of: forward at batch 1 and 16 (eval), and one training step at batch 64
(forward, MSE, backward, clip, Adam) in float32.
"""
import argparse
import math
import statistics
import sys
import time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError:
    print("pytorch_reference.py: PyTorch is not installed (apt-get install python3-torch); skipped")
    sys.exit(0)


def timestep_embedding(t, dim):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResnetBlock(nn.Module):
    """temb = 0: no time embedding (the autoencoder's blocks)."""
    def __init__(self, cin, cout, temb, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout) if temb else None
        self.norm2 = nn.GroupNorm(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.temb_proj is not None:
            h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c)
        self.q, self.k, self.v = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        y = self.norm(x)
        q, k, v = self.q(y).reshape(n, c, h * w), self.k(y).reshape(n, c, h * w), self.v(y).reshape(n, c, h * w)
        a = torch.softmax(torch.bmm(q.transpose(1, 2), k) / math.sqrt(c), dim=2)  # [n, P, P]
        o = torch.bmm(v, a.transpose(1, 2)).reshape(n, c, h, w)
        return x + self.proj_out(o)


class UNet(nn.Module):
    def __init__(self, ch=32, mult=(1, 2, 2), nres=2, attn_res=(7,), dropout=0.1, groups=8,
                 cin=1, cout=1, classes=10, size=28):
        super().__init__()
        temb = 4 * ch
        self.ch = ch
        self.temb = nn.Module()
        self.temb.dense = nn.ModuleList([nn.Linear(ch, temb), nn.Linear(temb, temb)])
        self.class_embedding = nn.Embedding(classes + 1, temb) if classes else None
        self.conv_in = nn.Conv2d(cin, ch, 3, padding=1)
        skips, c, res = [ch], ch, size
        self.down = nn.ModuleList()
        for level, m in enumerate(mult):
            d = nn.Module()
            d.block, d.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nres):
                d.block.append(ResnetBlock(c, ch * m, temb, groups, dropout))
                c = ch * m
                if res in attn_res:
                    d.attn.append(AttnBlock(c, groups))
                skips.append(c)
            if level != len(mult) - 1:
                d.downsample = nn.Module()
                d.downsample.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)
                skips.append(c)
                res //= 2
            self.down.append(d)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(c, c, temb, groups, dropout)
        self.mid.attn_1 = AttnBlock(c, groups)
        self.mid.block_2 = ResnetBlock(c, c, temb, groups, dropout)
        ups = [None] * len(mult)
        for level in reversed(range(len(mult))):
            u = nn.Module()
            u.block, u.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(nres + 1):
                u.block.append(ResnetBlock(c + skips.pop(), ch * mult[level], temb, groups, dropout))
                c = ch * mult[level]
                if res in attn_res:
                    u.attn.append(AttnBlock(c, groups))
            if level != 0:
                u.upsample = nn.Module()
                u.upsample.conv = nn.Conv2d(c, c, 3, padding=1)
                res *= 2
            ups[level] = u
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(groups, c)
        self.conv_out = nn.Conv2d(c, cout, 3, padding=1)

    def forward(self, x, t, y=None):
        emb = self.temb.dense[1](F.silu(self.temb.dense[0](timestep_embedding(t, self.ch))))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(y)
        hs = [self.conv_in(x)]
        for d in self.down:
            for i, block in enumerate(d.block):
                h = block(hs[-1], emb)
                if len(d.attn):
                    h = d.attn[i](h)
                hs.append(h)
            if hasattr(d, "downsample"):
                hs.append(d.downsample.conv(hs[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(hs[-1], emb)), emb)
        for u in reversed(self.up):
            for i, block in enumerate(u.block):
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
                if len(u.attn):
                    h = u.attn[i](h)
            if hasattr(u, "upsample"):
                h = u.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class Autoencoder(nn.Module):
    """LDM's AutoencoderKL as diffuse::Autoencoder builds it, under the same names (encoder.down.0.block.0.conv1,
    quant_conv, decoder.up.1.upsample.conv, ...). As diffuse: the stride-2 downsampling pads 1 on every side
    (LDM pads 0, 1, 0, 1), the blocks' GroupNorms use eps 1e-5, norm_out 1e-6."""
    def __init__(self, cin=1, ch=32, mult=(1, 2), nres=1, z=4, groups=8):
        super().__init__()
        top = ch * mult[-1]
        self.encoder = nn.Module()
        e = self.encoder
        e.conv_in = nn.Conv2d(cin, ch, 3, padding=1)
        e.down = nn.ModuleList()
        c = ch
        for level, m in enumerate(mult):
            d = nn.Module()
            d.block = nn.ModuleList()
            for _ in range(nres):
                d.block.append(ResnetBlock(c, ch * m, 0, groups, 0.0))
                c = ch * m
            if level != len(mult) - 1:
                d.downsample = nn.Module()
                d.downsample.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)
            e.down.append(d)
        e.mid = nn.Module()
        e.mid.block_1, e.mid.attn_1, e.mid.block_2 = (ResnetBlock(top, top, 0, groups, 0.0), AttnBlock(top, groups),
                                                      ResnetBlock(top, top, 0, groups, 0.0))
        e.norm_out = nn.GroupNorm(groups, top, eps=1e-6)
        e.conv_out = nn.Conv2d(top, 2 * z, 3, padding=1)
        self.quant_conv = nn.Conv2d(2 * z, 2 * z, 1)
        self.post_quant_conv = nn.Conv2d(z, z, 1)
        self.decoder = nn.Module()
        d = self.decoder
        d.conv_in = nn.Conv2d(z, top, 3, padding=1)
        d.mid = nn.Module()
        d.mid.block_1, d.mid.attn_1, d.mid.block_2 = (ResnetBlock(top, top, 0, groups, 0.0), AttnBlock(top, groups),
                                                      ResnetBlock(top, top, 0, groups, 0.0))
        ups = [None] * len(mult)
        c = top
        for level in reversed(range(len(mult))):
            u = nn.Module()
            u.block = nn.ModuleList()
            for _ in range(nres + 1):
                u.block.append(ResnetBlock(c, ch * mult[level], 0, groups, 0.0))
                c = ch * mult[level]
            if level != 0:
                u.upsample = nn.Module()
                u.upsample.conv = nn.Conv2d(c, c, 3, padding=1)
            ups[level] = u
        d.up = nn.ModuleList(ups)
        d.norm_out = nn.GroupNorm(groups, c, eps=1e-6)
        d.conv_out = nn.Conv2d(c, cin, 3, padding=1)

    def encode(self, x):
        """The posterior's moments [N, 2z, h, w]: the mean's channels, then the log-variance's."""
        e = self.encoder
        h = e.conv_in(x)
        for d in e.down:
            for block in d.block:
                h = block(h)
            if hasattr(d, "downsample"):
                h = d.downsample.conv(h)
        h = e.mid.block_2(e.mid.attn_1(e.mid.block_1(h)))
        return self.quant_conv(e.conv_out(F.silu(e.norm_out(h))))

    def decode(self, z):
        d = self.decoder
        h = d.mid.block_2(d.mid.attn_1(d.mid.block_1(d.conv_in(self.post_quant_conv(z)))))
        for u in reversed(d.up):
            for block in u.block:
                h = block(h)
            if hasattr(u, "upsample"):
                h = u.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return d.conv_out(F.silu(d.norm_out(h)))


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = UNet()
    params = sum(p.numel() for p in model.parameters())
    print(f"PyTorch {torch.__version__}, {args.threads} threads, {params:,} parameters")

    model.eval()
    with torch.no_grad():
        for batch in (1, 16):
            x, t, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 1000, (batch,)), torch.full((batch,), 3)
            print(f"forward batch {batch}: {median_ms(lambda: model(x, t, y), args.repeats):.1f} ms")

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    x, t = torch.randn(64, 1, 28, 28), torch.randint(0, 1000, (64,))
    y, target = torch.arange(64) % 10, torch.randn(64, 1, 28, 28)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x, t, y), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    print(f"training step batch 64: {median_ms(step, args.repeats):.1f} ms")


if __name__ == "__main__":
    main()
