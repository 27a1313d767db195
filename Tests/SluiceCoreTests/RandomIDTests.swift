import Foundation
import Testing
@testable import SluiceCore

@Suite struct RandomIDTests {
    @Test func randomUUIDsAreVersion4AndDistinct() {
        let ids = (0..<1000).map { _ in UUID.systemRandom() }
        #expect(Set(ids).count == 1000)
        for id in ids.prefix(10) {
            let text = id.uuidString
            #expect(Array(text)[14] == "4")
            #expect("89AB".contains(Array(text)[19]))
        }
    }
}
