"""W1 for Metaflow: a 50-step linear chain of no-op steps; each takes the previous one's output.

Metaflow needs every step written out (it reads the flow's source), so the 48 middle steps are
spelled out: ``start``, ``s02`` .. ``s49``, ``end`` = 50 steps, each adding one to ``self.x``.
"""

from metaflow import FlowSpec, step

STEPS = 50


class Chain(FlowSpec):
    @step
    def start(self):
        self.x = 1
        self.next(self.s02)

    @step
    def s02(self):
        self.x = self.x + 1
        self.next(self.s03)

    @step
    def s03(self):
        self.x = self.x + 1
        self.next(self.s04)

    @step
    def s04(self):
        self.x = self.x + 1
        self.next(self.s05)

    @step
    def s05(self):
        self.x = self.x + 1
        self.next(self.s06)

    @step
    def s06(self):
        self.x = self.x + 1
        self.next(self.s07)

    @step
    def s07(self):
        self.x = self.x + 1
        self.next(self.s08)

    @step
    def s08(self):
        self.x = self.x + 1
        self.next(self.s09)

    @step
    def s09(self):
        self.x = self.x + 1
        self.next(self.s10)

    @step
    def s10(self):
        self.x = self.x + 1
        self.next(self.s11)

    @step
    def s11(self):
        self.x = self.x + 1
        self.next(self.s12)

    @step
    def s12(self):
        self.x = self.x + 1
        self.next(self.s13)

    @step
    def s13(self):
        self.x = self.x + 1
        self.next(self.s14)

    @step
    def s14(self):
        self.x = self.x + 1
        self.next(self.s15)

    @step
    def s15(self):
        self.x = self.x + 1
        self.next(self.s16)

    @step
    def s16(self):
        self.x = self.x + 1
        self.next(self.s17)

    @step
    def s17(self):
        self.x = self.x + 1
        self.next(self.s18)

    @step
    def s18(self):
        self.x = self.x + 1
        self.next(self.s19)

    @step
    def s19(self):
        self.x = self.x + 1
        self.next(self.s20)

    @step
    def s20(self):
        self.x = self.x + 1
        self.next(self.s21)

    @step
    def s21(self):
        self.x = self.x + 1
        self.next(self.s22)

    @step
    def s22(self):
        self.x = self.x + 1
        self.next(self.s23)

    @step
    def s23(self):
        self.x = self.x + 1
        self.next(self.s24)

    @step
    def s24(self):
        self.x = self.x + 1
        self.next(self.s25)

    @step
    def s25(self):
        self.x = self.x + 1
        self.next(self.s26)

    @step
    def s26(self):
        self.x = self.x + 1
        self.next(self.s27)

    @step
    def s27(self):
        self.x = self.x + 1
        self.next(self.s28)

    @step
    def s28(self):
        self.x = self.x + 1
        self.next(self.s29)

    @step
    def s29(self):
        self.x = self.x + 1
        self.next(self.s30)

    @step
    def s30(self):
        self.x = self.x + 1
        self.next(self.s31)

    @step
    def s31(self):
        self.x = self.x + 1
        self.next(self.s32)

    @step
    def s32(self):
        self.x = self.x + 1
        self.next(self.s33)

    @step
    def s33(self):
        self.x = self.x + 1
        self.next(self.s34)

    @step
    def s34(self):
        self.x = self.x + 1
        self.next(self.s35)

    @step
    def s35(self):
        self.x = self.x + 1
        self.next(self.s36)

    @step
    def s36(self):
        self.x = self.x + 1
        self.next(self.s37)

    @step
    def s37(self):
        self.x = self.x + 1
        self.next(self.s38)

    @step
    def s38(self):
        self.x = self.x + 1
        self.next(self.s39)

    @step
    def s39(self):
        self.x = self.x + 1
        self.next(self.s40)

    @step
    def s40(self):
        self.x = self.x + 1
        self.next(self.s41)

    @step
    def s41(self):
        self.x = self.x + 1
        self.next(self.s42)

    @step
    def s42(self):
        self.x = self.x + 1
        self.next(self.s43)

    @step
    def s43(self):
        self.x = self.x + 1
        self.next(self.s44)

    @step
    def s44(self):
        self.x = self.x + 1
        self.next(self.s45)

    @step
    def s45(self):
        self.x = self.x + 1
        self.next(self.s46)

    @step
    def s46(self):
        self.x = self.x + 1
        self.next(self.s47)

    @step
    def s47(self):
        self.x = self.x + 1
        self.next(self.s48)

    @step
    def s48(self):
        self.x = self.x + 1
        self.next(self.s49)

    @step
    def s49(self):
        self.x = self.x + 1
        self.next(self.end)

    @step
    def end(self):
        self.x = self.x + 1
        assert self.x == STEPS


if __name__ == "__main__":
    Chain()
